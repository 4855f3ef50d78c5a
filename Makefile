# Convenience wrapper around CMake. `make test` is what CI runs.
BUILD ?= build
JOBS ?= 2

.PHONY: all train demo test clean

all:
	cmake -S . -B $(BUILD) -DROTARY_WERROR=ON >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

# The main job on its defaults: a small RoPE model on the English corpus.
train: all
	./$(BUILD)/rotary train --force

demo: all
	./$(BUILD)/rotary demo

test: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD)
