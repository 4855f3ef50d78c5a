# Tests of issue 5 (tokenizers); included from tests/tests.cmake.
