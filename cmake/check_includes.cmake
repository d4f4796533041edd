# The component boundaries, enforced at build time: a source file may include (#include "dir/file")
# only from the folders its component is allowed to see. Each component's public surface is the
# headers of its own folder; kernels/cpu and kernels/cuda are private to the kernels component, so
# nothing above the Backend interface (kernels/backend.h) can reach a backend's internals.
# Run as: cmake -DROOT=<source dir> -DSTAMP=<file> -P check_includes.cmake
set(allowed_runtime_core "runtime/core")
set(allowed_runtime_model "runtime/core;runtime/model")
set(allowed_runtime_tokenizer "runtime/core;runtime/tokenizer")
set(allowed_runtime_policy "runtime/core;runtime/model;runtime/policy")
set(allowed_runtime_io "runtime/core;runtime/io")
set(allowed_kernels "runtime/core;kernels")
set(allowed_kernels_cpu "runtime/core;kernels;kernels/cpu")
set(allowed_kernels_cuda "runtime/core;kernels;kernels/cuda")
set(allowed_runtime_engine "runtime/core;runtime/model;runtime/engine;kernels")
set(allowed_stage "runtime/core;runtime/model;runtime/policy;runtime/io;runtime/engine;kernels;stage")
set(allowed_runtime_generate
    "runtime/core;runtime/model;runtime/tokenizer;runtime/policy;runtime/io;runtime/engine;kernels;stage;runtime/generate")
set(allowed_comm
    "runtime/core;runtime/model;runtime/tokenizer;runtime/policy;runtime/io;runtime/engine;kernels;stage;runtime/generate;comm")
# The coordinator sees the core and the pipeline's cost model: its requests are JSON text, and what
# runs them is launch's.
set(allowed_comm_coordinator "runtime/core;comm;comm/coordinator")
set(allowed_launch
    "runtime/core;runtime/model;runtime/tokenizer;runtime/policy;runtime/io;runtime/engine;kernels;stage;runtime/generate;comm;comm/coordinator;launch")

set(components runtime/core runtime/model runtime/tokenizer runtime/policy runtime/io kernels kernels/cpu kernels/cuda
               runtime/engine stage runtime/generate comm comm/coordinator launch)
set(violations "")
foreach(comp ${components})
  string(REPLACE "/" "_" key "${comp}")
  set(allowed "${allowed_${key}}")
  file(GLOB sources "${ROOT}/${comp}/*.h" "${ROOT}/${comp}/*.cc" "${ROOT}/${comp}/*.cu" "${ROOT}/${comp}/*.cuh")
  foreach(src ${sources})
    file(STRINGS "${src}" lines REGEX "^#include \"[^\"]+\"")
    foreach(line ${lines})
      string(REGEX REPLACE "^#include \"([^\"]+)\".*" "\\1" inc "${line}")
      get_filename_component(dir "${inc}" DIRECTORY)
      if(dir STREQUAL "")
        continue()  # a local header of the same folder
      endif()
      list(FIND allowed "${dir}" found)
      if(found EQUAL -1)
        file(RELATIVE_PATH rel "${ROOT}" "${src}")
        string(APPEND violations "\n  ${rel} includes ${inc} (${comp} may include from: ${allowed})")
      endif()
    endforeach()
  endforeach()
endforeach()
if(violations)
  message(FATAL_ERROR "component boundaries crossed:${violations}")
endif()
file(WRITE "${STAMP}" "ok\n")
