# Test helpers shared by every component.
#
# Labels say which budget a test belongs to (see scripts/test):
#   unit      fast, deterministic, also run under ASan+UBSan
#   qemu      real QEMU 7.2 device models over qtest/QMP
#   analysis  real Debian kernel modules through the analyser
#   emulator  Xen's own x86_emulate built in userspace, hypervisor build
#   lab       real Xen 4.17 booted under QEMU TCG (RUN_SERIAL, ~2.5 GB each)
find_package(GTest REQUIRED)
include(GoogleTest)

# ioreq_filter_unit_test(NAME SOURCES... LIBS...)
function(ioreq_filter_gtest name)
  cmake_parse_arguments(T "" "LABEL;TIMEOUT" "SOURCES;LIBS" ${ARGN})
  if(NOT T_LABEL)
    set(T_LABEL unit)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE
    IOREQ_FILTER_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    IOREQ_FILTER_BINARY_DIR="${PROJECT_BINARY_DIR}"
    IOREQ_FILTER_CACHE_DIR="${IOREQ_FILTER_CACHE}")
  gtest_discover_tests(${name}
    PROPERTIES LABELS ${T_LABEL} TIMEOUT ${T_TIMEOUT}
    DISCOVERY_TIMEOUT 60)
endfunction()

# ioreq_filter_lab_test(NAME DOM0_SCRIPT ... ): tests that boot real Xen under QEMU TCG (label lab).
include(${CMAKE_CURRENT_LIST_DIR}/../tests/xen/IoreqFilterLab.cmake)
