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

# The default experiment: until the study driver lands, evaluate the shipped teacher.
experiment: build
	@mkdir -p results/teacher
	$(BUILD)/examples/evaluate --checkpoint $(TEACHER) --json results/teacher/evaluate.json

bench: build
	@mkdir -p results/bench
	$(BUILD)/benchmarks/bench_ops --benchmark_out=results/bench/bench_ops.json --benchmark_out_format=json

clean:
	rm -rf build
