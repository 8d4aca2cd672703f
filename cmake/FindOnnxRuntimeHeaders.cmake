# FindOnnxRuntimeHeaders
# ----------------------
# Finds the ONNX Runtime C/C++ API headers only. The runtime never links ONNX Runtime: it dlopens the library
# shipped in the onnxruntime wheel, so only the headers are needed at build time. No wheel ships them, so:
#
#   1. -DONNXRUNTIME_INCLUDE_DIR=<dir with onnxruntime_c_api.h>        (explicit override)
#   2. environment variable BOXSEG_ORT_INCLUDE=<same>                   (override for CI / other machines)
#   3. headers fetched earlier into <build>/_deps/onnxruntime-headers   (cached between builds)
#   4. headers installed on the system (e.g. Debian's libonnxruntime-dev)
#   5. fetch now with cmake/fetch_onnxruntime_headers.sh (Debian trixie's libonnxruntime-dev, unpacked only)
#
# Defines OnnxRuntimeHeaders_FOUND, ONNXRUNTIME_INCLUDE_DIR, OnnxRuntimeHeaders_API_VERSION and the interface
# target OnnxRuntime::Headers. The C API is versioned and append-only: headers of API N work with any later
# library, so the minimum required API version (21, ONNX Runtime 1.21) is all that is checked.

set(_ort_min_api 21)
set(_ort_fetch_dir "${CMAKE_BINARY_DIR}/_deps/onnxruntime-headers")
set(_ort_how "")

function(_ort_headers_ok dir out)
  if(dir AND EXISTS "${dir}/onnxruntime_c_api.h" AND EXISTS "${dir}/onnxruntime_cxx_api.h")
    set(${out} TRUE PARENT_SCOPE)
  else()
    set(${out} FALSE PARENT_SCOPE)
  endif()
endfunction()

if(ONNXRUNTIME_INCLUDE_DIR)
  _ort_headers_ok("${ONNXRUNTIME_INCLUDE_DIR}" _ok)
  if(NOT _ok)
    message(FATAL_ERROR "ONNXRUNTIME_INCLUDE_DIR=${ONNXRUNTIME_INCLUDE_DIR} does not contain onnxruntime_c_api.h "
                        "and onnxruntime_cxx_api.h.")
  endif()
  set(_ort_how "ONNXRUNTIME_INCLUDE_DIR")
elseif(DEFINED ENV{BOXSEG_ORT_INCLUDE} AND NOT "$ENV{BOXSEG_ORT_INCLUDE}" STREQUAL "")
  _ort_headers_ok("$ENV{BOXSEG_ORT_INCLUDE}" _ok)
  if(NOT _ok)
    message(FATAL_ERROR "BOXSEG_ORT_INCLUDE=$ENV{BOXSEG_ORT_INCLUDE} does not contain onnxruntime_c_api.h and "
                        "onnxruntime_cxx_api.h.")
  endif()
  set(ONNXRUNTIME_INCLUDE_DIR "$ENV{BOXSEG_ORT_INCLUDE}")
  set(_ort_how "BOXSEG_ORT_INCLUDE")
else()
  _ort_headers_ok("${_ort_fetch_dir}/usr/include/onnxruntime" _ok)
  if(_ok)
    set(_ort_dir "${_ort_fetch_dir}/usr/include/onnxruntime")
    set(_ort_how "cached fetch")
  else()
    find_path(_ORT_SYSTEM_INCLUDE onnxruntime_c_api.h PATH_SUFFIXES onnxruntime onnxruntime/core/session)
    _ort_headers_ok("${_ORT_SYSTEM_INCLUDE}" _ok)
    if(_ok)
      set(_ort_dir "${_ORT_SYSTEM_INCLUDE}")
      set(_ort_how "system")
    else()
      message(STATUS "ONNX Runtime headers: fetching Debian's libonnxruntime-dev into ${_ort_fetch_dir}")
      execute_process(
        COMMAND bash "${CMAKE_CURRENT_LIST_DIR}/fetch_onnxruntime_headers.sh" "${_ort_fetch_dir}"
        RESULT_VARIABLE _ort_rc
        OUTPUT_VARIABLE _ort_out
        ERROR_VARIABLE _ort_err
        OUTPUT_STRIP_TRAILING_WHITESPACE)
      _ort_headers_ok("${_ort_fetch_dir}/usr/include/onnxruntime" _ok)
      if(NOT _ort_rc EQUAL 0 OR NOT _ok)
        message(FATAL_ERROR
          "ONNX Runtime headers not found and the automatic fetch failed (exit ${_ort_rc}):\n${_ort_err}\n"
          "The runtime needs the ONNX Runtime C API headers (API >= ${_ort_min_api}, i.e. onnxruntime >= 1.21) "
          "at build time. Either let the build reach Debian's package mirror (it downloads the 85 KB package "
          "libonnxruntime-dev from trixie and only unpacks it), or point the build at a folder containing "
          "onnxruntime_c_api.h and onnxruntime_cxx_api.h:\n"
          "  pip install . --config-settings=cmake.define.ONNXRUNTIME_INCLUDE_DIR=/path/to/include\n"
          "  or: export BOXSEG_ORT_INCLUDE=/path/to/include")
      endif()
      set(_ort_dir "${_ort_fetch_dir}/usr/include/onnxruntime")
      set(_ort_how "fetched from Debian trixie libonnxruntime-dev")
    endif()
  endif()
  set(ONNXRUNTIME_INCLUDE_DIR "${_ort_dir}")  # not cached: an explicit -D value stays the override
endif()

file(STRINGS "${ONNXRUNTIME_INCLUDE_DIR}/onnxruntime_c_api.h" _ort_version_line
     REGEX "^#define ORT_API_VERSION [0-9]+")
string(REGEX REPLACE "^#define ORT_API_VERSION ([0-9]+).*" "\\1" OnnxRuntimeHeaders_API_VERSION
       "${_ort_version_line}")
if(NOT OnnxRuntimeHeaders_API_VERSION OR OnnxRuntimeHeaders_API_VERSION LESS _ort_min_api)
  message(FATAL_ERROR "ONNX Runtime headers in ${ONNXRUNTIME_INCLUDE_DIR} declare C API version "
                      "'${OnnxRuntimeHeaders_API_VERSION}'; need >= ${_ort_min_api} (onnxruntime 1.21 or newer).")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(OnnxRuntimeHeaders
  REQUIRED_VARS ONNXRUNTIME_INCLUDE_DIR OnnxRuntimeHeaders_API_VERSION
  VERSION_VAR OnnxRuntimeHeaders_API_VERSION)

if(OnnxRuntimeHeaders_FOUND AND NOT TARGET OnnxRuntime::Headers)
  add_library(OnnxRuntime::Headers INTERFACE IMPORTED)
  set_target_properties(OnnxRuntime::Headers PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${ONNXRUNTIME_INCLUDE_DIR}")
  message(STATUS "ONNX Runtime headers: ${ONNXRUNTIME_INCLUDE_DIR} (C API ${OnnxRuntimeHeaders_API_VERSION}, "
                 "${_ort_how})")
endif()
