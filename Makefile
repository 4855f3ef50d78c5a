# Convenience wrapper around CMake. `make test` is what CI runs.
BUILD ?= build
JOBS ?= 2

.PHONY: all demo test clean

all:
	cmake -S . -B $(BUILD) -DROTARY_WERROR=ON >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

demo: all
	./$(BUILD)/rotary demo

test: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD)
