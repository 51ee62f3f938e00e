# Fuzz targets (included from the top-level CMakeLists.txt inside the tests block).
#
# Every target is always built as a replay test (tests/fuzz/replay.c) over its
# checked-in corpus, tests/fuzz/corpus/<target>, against the normal library, so
# ctest runs each harness on every input fuzzing kept, with the build's sanitizers.
#
# With -DDSCKPT_FUZZ=ON (clang) the libFuzzer binaries fuzz_<target> are built too.
# They link their own copy of the library (dsckpt_fuzzlib) and of the runtime
# (dsrt_fuzz, without the MPI backend: one rank through the self collectives),
# compiled with -fsanitize=fuzzer-no-link so libFuzzer sees the edges of the code
# under test, not just the harness. The sanitizers of the build (DSCKPT_ASAN /
# DSCKPT_UBSAN) apply to them as to everything else.
set(DS_FUZZ_LIB_TARGETS safetensors manifest zip pickle deepspeed verify tag zchunk)
set(DS_FUZZ_RT_TARGETS trainer_state config data engine_load)

function(ds_fuzz_common tgt)
  target_compile_definitions(${tgt} PRIVATE _GNU_SOURCE)
  target_include_directories(${tgt} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz ${DS_INC_ALL})
endfunction()

foreach(fz ${DS_FUZZ_LIB_TARGETS} ${DS_FUZZ_RT_TARGETS})
  list(FIND DS_FUZZ_RT_TARGETS ${fz} is_rt)
  if(is_rt GREATER -1 AND NOT DS_HAVE_RUNTIME)
    continue()
  endif()
  add_executable(replay_${fz} tests/fuzz/replay.c tests/fuzz/fuzz_${fz}.c)
  ds_fuzz_common(replay_${fz})
  if(is_rt GREATER -1)
    target_link_libraries(replay_${fz} PRIVATE dsrt)
  else()
    target_link_libraries(replay_${fz} PRIVATE dsckpt_static)
  endif()
  add_test(NAME fuzz_replay_${fz}
    COMMAND replay_${fz} ${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz/corpus/${fz})
endforeach()

if(DSCKPT_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "DSCKPT_FUZZ=ON needs clang (CC=clang)")
  endif()
  add_library(dsckpt_fuzzlib STATIC ${DS_COMMON_SOURCES} ${DS_FORMAT_SOURCES} ${DS_KERNEL_SOURCES} ${DS_LIB_SOURCES})
  target_compile_options(dsckpt_fuzzlib PRIVATE -fsanitize=fuzzer-no-link)
  target_compile_definitions(dsckpt_fuzzlib PRIVATE DSCKPT_BUILDING _GNU_SOURCE)
  target_include_directories(dsckpt_fuzzlib PUBLIC ${DS_INC_ALL})
  target_link_libraries(dsckpt_fuzzlib PUBLIC PkgConfig::CJSON PkgConfig::ZSTD OpenSSL::Crypto ZLIB::ZLIB
    Threads::Threads m)
  # The runtime without MPI (comm_mpi.c) and without OpenMP: one rank, one thread.
  set(DS_RT_FUZZ_SOURCES ${DS_RT_SOURCES})
  list(FILTER DS_RT_FUZZ_SOURCES EXCLUDE REGEX "/comm_mpi\\.c$")
  # The training-step kernels likewise instrumented, single-threaded (no OpenMP).
  add_library(dskern_fuzz STATIC kernels/gemm.c kernels/nn.c kernels/optim.c)
  target_compile_options(dskern_fuzz PRIVATE -fsanitize=fuzzer-no-link -Wno-unknown-pragmas
    -ffp-contract=off)
  target_include_directories(dskern_fuzz PUBLIC ${DS_INC_KERNELS})
  target_link_libraries(dskern_fuzz PUBLIC dsckpt_fuzzlib m)
  add_library(dsrt_fuzz STATIC ${DS_RT_FUZZ_SOURCES})
  target_compile_options(dsrt_fuzz PRIVATE -fsanitize=fuzzer-no-link -Wno-unknown-pragmas)
  target_compile_definitions(dsrt_fuzz PRIVATE _GNU_SOURCE)
  target_include_directories(dsrt_fuzz PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/runtime)
  target_link_libraries(dsrt_fuzz PUBLIC dskern_fuzz dsckpt_fuzzlib m)
  foreach(fz ${DS_FUZZ_LIB_TARGETS} ${DS_FUZZ_RT_TARGETS})
    add_executable(fuzz_${fz} tests/fuzz/fuzz_${fz}.c)
    ds_fuzz_common(fuzz_${fz})
    target_compile_options(fuzz_${fz} PRIVATE -fsanitize=fuzzer)
    target_link_options(fuzz_${fz} PRIVATE -fsanitize=fuzzer)
    list(FIND DS_FUZZ_RT_TARGETS ${fz} is_rt)
    if(is_rt GREATER -1)
      target_link_libraries(fuzz_${fz} PRIVATE dsrt_fuzz)
    else()
      target_link_libraries(fuzz_${fz} PRIVATE dsckpt_fuzzlib)
    endif()
  endforeach()
  add_custom_target(fuzz_all DEPENDS
    fuzz_safetensors fuzz_manifest fuzz_zip fuzz_pickle fuzz_deepspeed fuzz_verify fuzz_tag fuzz_zchunk
    fuzz_trainer_state fuzz_config fuzz_data fuzz_engine_load)
endif()
