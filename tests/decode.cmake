# Tests of issue 5 (decode); included from tests/tests.cmake.
