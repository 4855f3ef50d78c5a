# Tests of issue 5 (llama); included from tests/tests.cmake.
