# Thin wrapper over the CMake presets. Quick start: `make experiment`, `make test`.
PRESET ?= release
BUILD  := build/$(PRESET)
JOBS   ?= 2
TEACHER ?= models/vit-fmnist.safetensors

.PHONY: all deps configure build test test-quick experiment bench clean

all: build

deps:
	@bash cmake/install-deps.sh

configure: deps
	cmake --preset $(PRESET)

build: configure
	cmake --build $(BUILD) -j$(JOBS)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

# Everything but the tests labelled slow (for the edit-build-test loop).
test-quick: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS) -LE slow

# The default experiment: the whole study at reduced budgets (<= 10 min on 2 cores), report in
# results/quick/report.md. `PRESET_STUDY=full make experiment` runs the full budgets.
PRESET_STUDY ?= quick
experiment: configure
	cmake --build $(BUILD) -j$(JOBS) --target sparsity_to_simplicity
	$(BUILD)/examples/sparsity_to_simplicity --preset $(PRESET_STUDY) --checkpoint $(TEACHER)

bench: build
	@mkdir -p results/bench
	$(BUILD)/benchmarks/bench_ops --benchmark_out=results/bench/bench_ops.json --benchmark_out_format=json
	$(BUILD)/benchmarks/bench_mixers --benchmark_out=results/bench/bench_mixers.json --benchmark_out_format=json

clean:
	rm -rf build
