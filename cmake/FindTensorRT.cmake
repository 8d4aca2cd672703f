# FindTensorRT
# ------------
# Finds TensorRT's C++ API (NvInfer.h and libnvinfer). Only runtime/CMakeLists.txt calls it, and only when
# -DBOXSEG_WITH_TENSORRT=ON, so a machine without TensorRT never fails here.
#
# Hints: -DTensorRT_ROOT=<dir> or the environment variables TensorRT_ROOT / TENSORRT_ROOT (a tar install with
# include/ and lib/), else the system paths (Debian/Ubuntu packages libnvinfer-dev put them under
# /usr/include/x86_64-linux-gnu and /usr/lib/x86_64-linux-gnu).
#
# Defines TensorRT_FOUND, TensorRT_INCLUDE_DIR, TensorRT_LIBRARY, TensorRT_VERSION and the imported target
# TensorRT::nvinfer.

set(_trt_hints ${TensorRT_ROOT} $ENV{TensorRT_ROOT} $ENV{TENSORRT_ROOT} /usr/local/tensorrt /opt/tensorrt)

find_path(TensorRT_INCLUDE_DIR NvInfer.h
  HINTS ${_trt_hints}
  PATH_SUFFIXES include include/x86_64-linux-gnu include/aarch64-linux-gnu)
find_library(TensorRT_LIBRARY nvinfer
  HINTS ${_trt_hints}
  PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu lib/aarch64-linux-gnu)

set(TensorRT_VERSION "")
if(TensorRT_INCLUDE_DIR AND EXISTS "${TensorRT_INCLUDE_DIR}/NvInferVersion.h")
  file(STRINGS "${TensorRT_INCLUDE_DIR}/NvInferVersion.h" _trt_defs REGEX "^#define NV_TENSORRT_(MAJOR|MINOR|PATCH) ")
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX MATCH "NV_TENSORRT_${_part} ([0-9]+)" _m "${_trt_defs}")
    set(_trt_${_part} "${CMAKE_MATCH_1}")
  endforeach()
  set(TensorRT_VERSION "${_trt_MAJOR}.${_trt_MINOR}.${_trt_PATCH}")
endif()

set(_trt_reason "TensorRT was requested (-DBOXSEG_WITH_TENSORRT=ON) but NvInfer.h / libnvinfer were not found: \
set TensorRT_ROOT to the TensorRT install folder, or configure with -DBOXSEG_WITH_TENSORRT=OFF.")
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(TensorRT
  REQUIRED_VARS TensorRT_LIBRARY TensorRT_INCLUDE_DIR
  VERSION_VAR TensorRT_VERSION
  REASON_FAILURE_MESSAGE "${_trt_reason}")

if(TensorRT_FOUND AND NOT TARGET TensorRT::nvinfer)
  add_library(TensorRT::nvinfer UNKNOWN IMPORTED)
  set_target_properties(TensorRT::nvinfer PROPERTIES
    IMPORTED_LOCATION "${TensorRT_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${TensorRT_INCLUDE_DIR}")
endif()
mark_as_advanced(TensorRT_INCLUDE_DIR TensorRT_LIBRARY)
