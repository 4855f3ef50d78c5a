# Tests of issue 5 (gguf); included from tests/tests.cmake.
