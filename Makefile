# Thin wrapper over the CMake presets. Quick start: `make experiment`, `make test`.
PRESET ?= release
BUILD  := build/$(PRESET)
JOBS   ?= 2
TEACHER ?= models/vit-fmnist.safetensors

.PHONY: all deps configure build test test-quick experiment bench fuzz clean

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

# Fuzz every harness for FUZZ_SECONDS each (default 60), on a working copy of its corpus in
# build/<preset>/fuzz_corpus/ (new inputs stay there; copy findings into fuzz/corpus/ to keep
# them replayed by ctest). Prints libFuzzer's execution count per harness.
FUZZ_SECONDS ?= 60
fuzz: build
	@for h in checkpoint idx config; do \
	  mkdir -p $(BUILD)/fuzz_corpus/$$h && cp -n fuzz/corpus/$$h/* $(BUILD)/fuzz_corpus/$$h/ 2>/dev/null; \
	  echo "fuzz_$$h: $(FUZZ_SECONDS) s"; \
	  OMP_NUM_THREADS=1 $(BUILD)/fuzz/fuzz_$$h -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$(BUILD)/fuzz_corpus/$$h- $(BUILD)/fuzz_corpus/$$h > $(BUILD)/fuzz_$$h.log 2>&1; rc=$$?; \
	  grep -E "stat::number_of_executed_units|ERROR|SUMMARY" $(BUILD)/fuzz_$$h.log; \
	  [ $$rc -eq 0 ] || { echo "fuzz_$$h failed ($$rc): $(BUILD)/fuzz_$$h.log"; exit 1; }; \
	done

clean:
	rm -rf build
