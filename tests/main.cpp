// Catch2's main for the whole suite; each TEST_CASE is registered with ctest by catch_discover_tests.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
