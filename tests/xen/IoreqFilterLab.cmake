# Registering tests that boot the Xen lab (tests/xen/lab run; see docs/testing-on-real-xen.md).
# Included from cmake/IoreqFilterTesting.cmake so any component's CMakeLists.txt can call it.
#
# ioreq_filter_lab_test(NAME
#     DOM0_SCRIPT file                 dom0 test script, run as /lab/test.sh (`. /lab/lib.sh`)
#     [EXTRA src:/dest ...]            files or directories copied into dom0
#     [BINS src[:/dest] ...]           executables / shared objects plus their libraries
#                                      (generator expressions work: $<TARGET_FILE:ioreq-filterd>)
#     [TINY_GUESTS src.c[:name] ...]   bare-metal guests -> /lab/guests/<name>.elf
#     [LINUX_GUEST init[:mod,mod]]     Debian kernel + initramfs -> /lab/linux-guest/
#     [DOM0_MODULES module ...]        extra kernel modules loaded in dom0 before the script
#     [XEN path]                       hypervisor to boot (xen or xen.gz) instead of Debian's
#     [XEN_ARGS "args"] [DOM0_ARGS "args"]
#     [EXPECT check ...]               checks that must report IOREQ-LAB-PASS
#     BOOT_TIMEOUT seconds)            limit for the boot itself (required: every lab test states
#                                      its bound; the dom0 script gets min(150, half) s less)
#
# Every lab test gets label `lab`, RUN_SERIAL (a boot needs ~2 GB and both cores) and a ctest
# TIMEOUT above the boot limit, so a hang ends as a failed test with its logs in
# <build>/lab-logs/NAME. Three bounds, tightest first:
#   - the runner's stall watchdog: a machine whose QEMU used less than 1.5 s of CPU per emulated CPU
#     in 60 s ends as "stalled" (naming the last progress marker) after ~30 s of diagnostics, so an
#     idle hang is reported within ~2 min whatever BOOT_TIMEOUT says;
#   - BOOT_TIMEOUT: a machine that keeps using CPU without finishing (a livelock, a slow host);
#   - ctest's TIMEOUT = BOOT_TIMEOUT + 300: building the dom0 image on a cold cache (downloads,
#     ~2 min), the stall diagnostics and the runner's kill; never reached while the runner works.
set(IOREQ_FILTER_LAB ${CMAKE_CURRENT_LIST_DIR}/lab CACHE INTERNAL "tests/xen/lab")

function(ioreq_filter_lab_test name)
  cmake_parse_arguments(L ""
    "DOM0_SCRIPT;LINUX_GUEST;XEN;XEN_ARGS;DOM0_ARGS;BOOT_TIMEOUT"
    "EXTRA;BINS;TINY_GUESTS;DOM0_MODULES;EXPECT" ${ARGN})
  if(NOT L_DOM0_SCRIPT)
    message(FATAL_ERROR "ioreq_filter_lab_test(${name}): DOM0_SCRIPT is required")
  endif()
  if(L_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "ioreq_filter_lab_test(${name}): unknown arguments ${L_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT L_BOOT_TIMEOUT MATCHES "^[0-9]+$")
    message(FATAL_ERROR "ioreq_filter_lab_test(${name}): BOOT_TIMEOUT seconds is required (every lab test states its bound)")
  endif()
  get_filename_component(script "${L_DOM0_SCRIPT}" ABSOLUTE)
  set(cmd ${IOREQ_FILTER_LAB} run --name ${name} --dom0-script ${script}
    --logdir ${CMAKE_BINARY_DIR}/lab-logs/${name} --timeout ${L_BOOT_TIMEOUT})
  foreach(item IN LISTS L_EXTRA)
    list(APPEND cmd --extra ${item})
  endforeach()
  foreach(item IN LISTS L_BINS)
    list(APPEND cmd --bin ${item})
  endforeach()
  foreach(item IN LISTS L_TINY_GUESTS)
    list(APPEND cmd --tiny-guest ${item})
  endforeach()
  if(L_LINUX_GUEST)
    list(APPEND cmd --linux-guest ${L_LINUX_GUEST})
  endif()
  foreach(item IN LISTS L_DOM0_MODULES)
    list(APPEND cmd --dom0-module ${item})
  endforeach()
  if(L_XEN)
    list(APPEND cmd --xen ${L_XEN})
  endif()
  if(L_XEN_ARGS)
    list(APPEND cmd --xen-args "${L_XEN_ARGS}")
  endif()
  if(L_DOM0_ARGS)
    list(APPEND cmd --dom0-args "${L_DOM0_ARGS}")
  endif()
  foreach(item IN LISTS L_EXPECT)
    list(APPEND cmd --expect ${item})
  endforeach()
  add_test(NAME ${name} COMMAND ${cmd})
  # Beyond the boot limit: building the dom0 image on a cold cache, the stall diagnostics, slack.
  math(EXPR ctest_timeout "${L_BOOT_TIMEOUT} + 300")
  set_tests_properties(${name} PROPERTIES
    LABELS lab
    RUN_SERIAL TRUE
    TIMEOUT ${ctest_timeout}
    ENVIRONMENT "IOREQ_FILTER_CACHE=${IOREQ_FILTER_CACHE}")
endfunction()
