#!/usr/bin/env bash
# gpu-check.sh — the one device check of issue 14: everything the GPU path claims,
# run on a machine with an NVIDIA GPU from a build made elsewhere, in under 8 minutes,
# into one report file.
#
#   scripts/gpu-check.sh --prepare   (here, on the build machine) builds build-gpu/
#                                    (RelWithDebInfo, CUDA on) and fills .gpu-carry/ with the
#                                    stripped programs, the shared libraries the GPU
#                                    machine may lack (found with ldd; never CUDA's own
#                                    libraries, which it has) and a relocatable copy of
#                                    Open MPI, plus a MANIFEST of SHA-256 digests; then
#                                    runs --dry-run
#   scripts/gpu-check.sh --dry-run   checks the carried artefacts (digests, ELF class,
#                                    libraries resolvable) and prints what it would run
#   scripts/gpu-check.sh --rehearse  runs the dstrain steps here on the CPU through the
#                                    cpu-strict table with build/'s programs (checks the
#                                    script's logic; proves nothing about a GPU)
#   scripts/gpu-check.sh             on the GPU machine: runs the steps below and writes
#                                    $OUT/gpu-check-report.txt (./gpu-check-out/ when
#                                    OUT is unset) and $OUT/gpu-check-logs.tar.gz. With
#                                    no GPU visible it does the dry run instead.
#
# Steps, in this order (each under its own timeout inside a 470 s budget; a step that
# cannot run is reported SKIP with the reason, never PASS):
#   env        GPU, driver, CUDA/torch versions; carried programs' libraries resolve
#   kernels    tests/test_kernels_cuda.c with DSCKPT_REQUIRE_CUDA=1 (no device = fail)
#   dstrain_loss_ckpt  tiny config, CPU vs --device cuda loss curves at W=1 and W=2 (the
#              device's GEMMs in bf16, --gemm_dtype auto), fp32 GEMMs at W=1 (tighter
#              tolerance), and --comm nccl vs mpi at W=1
#              (MPI, device buffers staged; bf16 tolerance); the W=2 GPU run's
#              checkpoint verifies, consolidates with dsckpt, opens in Python's
#              safetensors with the very master weights the run logged, resumes on the
#              CPU and on the GPU (each rank's partitions staged, read on its threads)
#              to the same losses, and comes back as $OUT/gpu-ckpt.tar.gz
#   snapshot   bench/gpu_bench.c: snapshot D2H throughput / pinned-copy bandwidth
#              (target >= 0.8) and async stall / synchronous save (target <= 0.05)
#   torch      bench/gpu/torch_gpt2_step.py: GPT-2-124M-shaped step time, PyTorch
#              eager, bf16 autocast and fp32, with model FLOP utilisation
#   dstrain_gpt2  GPT-2-124M shape at W=1 on the GPU: step time / torch's, one async
#              save's stall, the step with offload_optimizer device cpu, and stage 3
#              with offload_param too (device memory and step time)
#   offload    bench/gpu_bench.c: the optimizer phase of 124M parameters on the device
#              vs offloaded to the CPU (pipelined copies), and device bytes per parameter
#   comm       tests/mpi/test_comm_cuda.c on 1 and 2 ranks sharing the GPU (device
#              buffers through the staged MPI backend; NCCL at W = 1), when built
#
# Device machine call (see docs/gpu.md): carry [".gpu-carry"], command
#   bash scripts/gpu-check.sh
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CARRY=$ROOT/.gpu-carry
BUILD=$ROOT/build-gpu
MAX_CARRY_MIB=${GPU_CHECK_MAX_CARRY_MIB:-64}

usage() {
    sed -n '2,43p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

mode=run
case "${1:-}" in
--prepare) mode=prepare ;;
--dry-run) mode=dry ;;
--rehearse) mode=rehearse ;;
-h | --help) usage 0 ;;
"") ;;
*) echo "gpu-check: unknown option $1" >&2; usage 3 ;;
esac

die() {
    echo "gpu-check: $*" >&2
    exit 1
}

# Libraries the GPU machine provides itself: the C runtime, the compiler runtime
# (its own, newer), the driver and CUDA's libraries (far too large to carry).
is_system_lib() {
    case "$1" in
    linux-vdso* | ld-linux* | libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | libutil.so*) return 0 ;;
    libgcc_s.so* | libstdc++.so*) return 0 ;;
    libcuda.so* | libcudart.so* | libcublas.so* | libcublasLt.so* | libnccl.so* | libnvidia-*) return 0 ;;
    esac
    return 1
}

# Open MPI components that need fabrics a one-node run never uses (and whose
# libraries would not fit the carry).
skip_component() {
    case "$1" in
    *oshmem* | *java* | *ofi* | *psm* | *ucx* | *uct* | *openib* | *usnic* | *verbs* | *portals* | *_cuda* | *fortran*) return 0 ;;
    esac
    return 1
}

copy_libs_of() { # copy_libs_of FILE...: the non-system libraries each needs, into lib/
    local f line name path
    for f in "$@"; do
        while read -r line; do
            name=${line%% *}
            path=$(awk '{for (i = 1; i <= NF; i++) if ($i == "=>") print $(i + 1)}' <<<"$line")
            [ -n "$path" ] && [ "$path" != "not" ] || continue
            is_system_lib "$name" && continue
            [ -e "$CARRY/lib/$name" ] || cp -L "$path" "$CARRY/lib/$name"
        done < <(ldd "$f" 2>/dev/null | sed 's/^[[:space:]]*//')
    done
}

prepare() {
    command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || die "--prepare needs nvcc (CUDA) on this machine"
    echo "gpu-check: building $BUILD (RelWithDebInfo, stripped; CUDA on)"
    # The native CPU kernels (no OpenBLAS to carry; the GPU machine has none).
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSCKPT_CUDA=ON -DDSCKPT_TEST_HOOKS=ON \
        -DDSCKPT_BLAS=OFF -DDSCKPT_WERROR=ON >"$ROOT/build-gpu.configure.log" 2>&1 || die "configure failed (build-gpu.configure.log)"
    local targets="test_kernels_cuda gpu_bench dstrain dsckpt_cli"
    grep -q '^test_comm_cuda:' "$BUILD/Makefile" 2>/dev/null && targets="$targets test_comm_cuda"
    # shellcheck disable=SC2086
    cmake --build "$BUILD" -j"$(nproc)" --target $targets >"$ROOT/build-gpu.build.log" 2>&1 ||
        die "build failed (build-gpu.build.log)"
    rm -rf "$CARRY"
    mkdir -p "$CARRY/bin" "$CARRY/lib" "$CARRY/ompi/bin" "$CARRY/ompi/lib" "$CARRY/ompi/etc" "$CARRY/ompi/share"
    local b
    for b in test_kernels_cuda gpu_bench dstrain dsckpt test_comm_cuda; do
        [ -x "$BUILD/$b" ] || continue
        strip --strip-unneeded -o "$CARRY/bin/$b" "$BUILD/$b"
    done
    cp "$BUILD/dsrun" "$CARRY/bin/dsrun"
    copy_libs_of "$CARRY"/bin/*
    # Open MPI, relocatable through the OPAL_* variables (set by the run below).
    local ompi_pkglib ompi_share
    ompi_pkglib=$(ompi_info --path pkglibdir --parsable 2>/dev/null | sed -n 's/^path:pkglibdir://p')
    ompi_share=$(ompi_info --path pkgdatadir --parsable 2>/dev/null | sed -n 's/^path:pkgdatadir://p')
    if [ -d "$ompi_pkglib" ] && command -v orterun >/dev/null; then
        cp -L "$(command -v orterun)" "$CARRY/ompi/bin/mpirun"
        cp -L "$(command -v orted)" "$CARRY/ompi/bin/orted"
        mkdir -p "$CARRY/ompi/lib/openmpi3"
        local c
        for c in "$ompi_pkglib"/*.so; do
            skip_component "${c##*/}" && continue
            if ldd "$c" 2>/dev/null | grep -qE 'libfabric|libpsm|libuc[pmst]|libibverbs|librdmacm|not found'; then
                continue
            fi
            cp -L "$c" "$CARRY/ompi/lib/openmpi3/"
        done
        cp -rL "$ompi_share" "$CARRY/ompi/share/openmpi"
        [ -f /etc/openmpi/openmpi-mca-params.conf ] && cp /etc/openmpi/openmpi-mca-params.conf "$CARRY/ompi/etc/"
        copy_libs_of "$CARRY"/ompi/bin/* "$CARRY"/ompi/lib/openmpi3/*.so
        # pmix loads its own plugins
        local pmixdir
        pmixdir=$(dirname "$(ldd "$CARRY/lib/libopen-pal.so.40" 2>/dev/null | awk '/libpmix/{print $3}')" 2>/dev/null)
        if [ -n "$pmixdir" ] && [ -d "$pmixdir/pmix" ]; then
            mkdir -p "$CARRY/ompi/lib/pmix"
            cp -L "$pmixdir"/pmix/*.so "$CARRY/ompi/lib/pmix/" 2>/dev/null || true
        fi
    else
        echo "gpu-check: Open MPI not found here; the W=2 step will need the GPU machine's own" >&2
    fi
    strip --strip-unneeded "$CARRY"/lib/*.so* "$CARRY"/ompi/lib/openmpi3/*.so "$CARRY"/ompi/bin/* 2>/dev/null || true
    {
        echo "commit $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
        echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
        (cd "$CARRY" && find . -type f ! -name MANIFEST | LC_ALL=C sort | xargs sha256sum)
    } >"$CARRY/MANIFEST"
    local carry_kib tree_kib
    carry_kib=$(du -sk "$CARRY" | cut -f1)
    tree_kib=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 du -ck 2>/dev/null | tail -1 | cut -f1)
    echo "gpu-check: carry $((carry_kib / 1024)) MiB + working tree $((tree_kib / 1024)) MiB (limit $MAX_CARRY_MIB MiB)"
    [ $((carry_kib + tree_kib)) -lt $((MAX_CARRY_MIB * 1024)) ] || die "carry + tree exceed $MAX_CARRY_MIB MiB"
    dry_run
}

# Library directories of the GPU machine: CUDA's and the Python wheels' (torch's
# nvidia-* packages carry cuBLAS, cuBLASLt, NCCL and the runtime).
cuda_lib_dirs() {
    local d dirs=""
    for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda-*/lib64 /usr/local/cuda-*/lib \
        /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu; do
        [ -d "$d" ] && dirs="$dirs:$d"
    done
    local py
    py=$(python3 -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0] + "/x"))' 2>/dev/null)
    if [ -n "$py" ]; then
        for d in "$py"/*/lib; do [ -d "$d" ] && dirs="$dirs:$d"; done
    fi
    echo "${dirs#:}"
}

setup_env() {
    export LD_LIBRARY_PATH="$CARRY/lib:$CARRY/ompi/lib:$(cuda_lib_dirs)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # Open MPI: the machine's own if it has one, else the carried copy.
    # GPU_CHECK_MPI=carried forces the carried copy (to test it where a system one exists).
    if [ "${GPU_CHECK_MPI:-}" != carried ] && command -v mpirun >/dev/null 2>&1 &&
        mpirun --version 2>&1 | grep -q "Open MPI"; then
        MPI_FROM="system ($(command -v mpirun))"
    elif [ -x "$CARRY/ompi/bin/mpirun" ]; then
        export OPAL_PREFIX="$CARRY/ompi" OPAL_EXEC_PREFIX="$CARRY/ompi" OPAL_BINDIR="$CARRY/ompi/bin"
        export OPAL_LIBDIR="$CARRY/ompi/lib" OPAL_PKGLIBDIR="$CARRY/ompi/lib/openmpi3"
        export OPAL_DATADIR="$CARRY/ompi/share" OPAL_PKGDATADIR="$CARRY/ompi/share/openmpi"
        export OPAL_SYSCONFDIR="$CARRY/ompi/etc" OPAL_DATAROOTDIR="$CARRY/ompi/share"
        export OMPI_MCA_mca_base_component_path="$CARRY/ompi/lib/openmpi3"
        export OMPI_MCA_mca_base_component_show_load_errors=0 OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1
        [ -d "$CARRY/ompi/lib/pmix" ] && export PMIX_MCA_mca_base_component_path="$CARRY/ompi/lib/pmix"
        export PATH="$CARRY/ompi/bin:$PATH"
        MPI_FROM="carried ($CARRY/ompi)"
    else
        MPI_FROM="none"
    fi
    export PATH="$CARRY/bin:$PATH"
}

dry_run() {
    local ok=1 f
    echo "gpu-check: dry run (no GPU here, or --dry-run)"
    [ -f "$CARRY/MANIFEST" ] || { echo "  MISSING $CARRY/MANIFEST: run scripts/gpu-check.sh --prepare first"; exit 1; }
    if (cd "$CARRY" && sed -n '3,$p' MANIFEST | sha256sum --quiet -c -); then
        echo "  ok      MANIFEST digests ($(($(wc -l <"$CARRY/MANIFEST") - 2)) files, $(sed -n 1p "$CARRY/MANIFEST"))"
    else
        echo "  FAIL    MANIFEST digests"; ok=0
    fi
    for f in test_kernels_cuda gpu_bench dstrain dsckpt dsrun; do
        if [ -e "$CARRY/bin/$f" ]; then echo "  ok      bin/$f"; else echo "  FAIL    bin/$f missing"; ok=0; fi
    done
    for f in "$CARRY"/bin/*; do
        head -c 4 "$f" | grep -q ELF || continue
        file -b "$f" 2>/dev/null | grep -q 'x86-64' || { echo "  FAIL    $f is not an x86-64 program"; ok=0; }
    done
    setup_env
    local missing
    missing=$(for f in "$CARRY"/bin/* "$CARRY"/ompi/bin/*; do ldd "$f" 2>/dev/null | grep 'not found'; done | sort -u)
    if [ -n "$missing" ]; then echo "  FAIL    unresolved libraries here:"; echo "$missing" | sed 's/^/          /'; ok=0
    else echo "  ok      every carried program's libraries resolve (with the CUDA libraries of this machine)"; fi
    python3 -m py_compile "$ROOT/bench/gpu/torch_gpt2_step.py" && echo "  ok      bench/gpu/torch_gpt2_step.py compiles" ||
        { echo "  FAIL    bench/gpu/torch_gpt2_step.py"; ok=0; }
    echo "  mpi     $MPI_FROM"
    # grep -c reads the whole help (grep -q would close the pipe early: SIGPIPE under pipefail)
    if "$CARRY/bin/dstrain" --help 2>&1 | grep -c -- '--device' >/dev/null; then
        echo "  ok      dstrain has --device (the dstrain steps will run)"
    else
        echo "  note    dstrain has no --device: the dstrain steps will be reported SKIP"
    fi
    echo "gpu-check: on the GPU machine it would run:"
    plan | sed 's/^/  /'
    [ "$ok" = 1 ] || exit 1
    echo "gpu-check: dry run ok (nothing was run on a GPU)"
}

plan() {
    cat <<EOF
env       nvidia-smi; versions of nvcc, python3's torch; ldd of the carried programs
kernels   DSCKPT_REQUIRE_CUDA=1 bin/test_kernels_cuda                           (timeout 100 s)
dstrain_loss_ckpt  CPU vs --device cuda loss curves W=1, W=2 (and --comm nccl at W=1); GPU checkpoint verify,
          consolidate, safetensors == logged master, resume on CPU and GPU (timeout 120 s)
snapshot  bin/gpu_bench snapshot 2048                                           (timeout 45 s)
torch     python3 bench/gpu/torch_gpt2_step.py --batch 8 --steps 8 --vocab 256  (timeout 120 s)
dstrain_gpt2  124M shape --device cuda: step / torch, async save stall, offload (timeout 150 s)
offload   bin/gpu_bench offload 124: optimizer phase on the device vs offloaded (timeout 45 s)
comm      dsrun -n 1 and -n 2 bin/test_comm_cuda (staged MPI, NCCL at W=1)      (timeout 40 s each; if built)
EOF
}

# ---- the run on the GPU machine ----
OUTDIR=${OUT:-$ROOT/gpu-check-out}
REPORT=$OUTDIR/gpu-check-report.txt
LOGS=""
T_START=$(date +%s)

say() { echo "$*" | tee -a "$REPORT"; }

# step NAME TIMEOUT CMD...: PASS on exit 0, SKIP on 77, FAIL otherwise.
BUDGET_S=${GPU_CHECK_BUDGET_S:-470} # the whole run stays under 8 minutes
step() {
    local name=$1 tmo=$2
    shift 2
    local left=$((BUDGET_S - ($(date +%s) - T_START)))
    if [ "$left" -lt 15 ]; then
        say "[SKIP] $name: out of the ${BUDGET_S}s budget"
        return 77
    fi
    [ "$tmo" -gt "$left" ] && tmo=$left
    local t0 rc log=$LOGS/$name.log
    t0=$(date +%s.%N)
    timeout --kill-after=5 "$tmo" "$@" >"$log" 2>&1
    rc=$?
    local dt
    dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
    local verdict=FAIL
    [ $rc -eq 0 ] && verdict=PASS
    [ $rc -eq 77 ] && verdict=SKIP
    [ $rc -eq 124 ] && verdict="FAIL (timeout ${tmo}s)"
    say "[$verdict] $name (${dt}s, exit $rc)"
    grep -E '^(SKIPPED|FAILED|device|[a-z_][A-Za-z0-9_]*=)|rel err|Run Summary|asserts|tests ' "$log" | head -60 | sed 's/^/    /' | tee -a "$REPORT"
    return $rc
}

# The dstrain steps run on DEV (cuda on the GPU machine; cpu-strict with --rehearse,
# which runs them here on the CPU to check the script itself).
DEV=${GPU_CHECK_DEVICE:-cuda}
# The GEMM operands of the device's W=1 run: auto is bf16 on cuda (the config's
# type); the rehearsal asks cpu-strict for bf16, which it emulates.
GEMM=${GPU_CHECK_GEMM:-auto}

# Loss curves CPU vs DEV at W=1 and W=2 (MPI, device buffers staged), and a checkpoint
# written by the DEV run: it verifies, consolidates with dsckpt, opens in Python's
# safetensors with exactly the master weights the run logged (SHA-256 of the fp32
# master), and resumes on the CPU (--device cpu) and on DEV to the same losses.
dstrain_steps() {
    local w=$LOGS/dstrain-work
    mkdir -p "$w" || return 1
    local data=$ROOT/fixtures/corpus/licenses.txt
    cat >"$w/ds.json" <<'EOF'
{"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.01}},
 "gradient_clipping": 1.0, "zero_optimization": {"stage": 2}}
EOF
    local model=(--n_layer 2 --n_head 2 --n_embd 64 --seq_len 64 --eval_windows 4 --max_steps 20)
    dstrain --deepspeed "$w/ds.json" --data "$data" "${model[@]}" --log_file "$w/cpu1.log" || return 1
    dstrain --deepspeed "$w/ds.json" --data "$data" "${model[@]}" --device "$DEV" --gemm_dtype "$GEMM" \
        --log_file "$w/gpu1.log" || return 1
    # gpu1 ran its GEMMs in bf16 (--gemm_dtype auto on cuda, the config's bf16); the
    # same run with fp32 GEMMs is held to a tighter tolerance against the CPU's.
    dstrain --deepspeed "$w/ds.json" --data "$data" "${model[@]}" --device "$DEV" --gemm_dtype fp32 \
        --log_file "$w/gpu1_fp32.log" || return 1
    # The engine's collectives on NCCL (--comm nccl, one rank on the one GPU): W=1 only,
    # as NCCL refuses two ranks on one device. Not with --rehearse (no CUDA there).
    if [ "$DEV" = cuda ]; then
        dstrain --deepspeed "$w/ds.json" --data "$data" "${model[@]}" --device cuda --comm nccl \
            --log_file "$w/gpu1_nccl.log" || return 1
    fi
    dsrun --num_procs 2 dstrain --deepspeed "$w/ds.json" --data "$data" "${model[@]}" --log_file "$w/cpu2.log" || return 1
    dsrun --num_procs 2 dstrain --deepspeed "$w/ds.json" --data "$data" "${model[@]}" --device "$DEV" \
        --log_file "$w/gpu2.log" --save_dir "$w/gpu2.save" --save_steps 10 || return 1
    # The step-10 checkpoint of the DEV run, resumed on the CPU to step 20.
    mkdir -p "$w/cpu_resume.save" || return 1
    cp -r "$w/gpu2.save/global_step10" "$w/cpu_resume.save/" || return 1
    dsrun --num_procs 2 dstrain --deepspeed "$w/ds.json" --data "$data" "${model[@]}" --device cpu \
        --log_file "$w/cpu_resume.log" --save_dir "$w/cpu_resume.save" --resume global_step10 || return 1
    # The same checkpoint resumed on DEV at W=2: each rank's device partitions come
    # up through its staging buffer, read on its threads.
    mkdir -p "$w/dev_resume.save" || return 1
    cp -r "$w/gpu2.save/global_step10" "$w/dev_resume.save/" || return 1
    dsrun --num_procs 2 dstrain --deepspeed "$w/ds.json" --data "$data" "${model[@]}" --device "$DEV" \
        --log_file "$w/dev_resume.log" --save_dir "$w/dev_resume.save" --resume global_step10 || return 1
    dsckpt verify "$w/gpu2.save" -t global_step20 || return 1
    dsckpt consolidate "$w/gpu2.save" -t global_step20 --dtype fp32 -o "$w/gpu2.safetensors" || return 1
    # The checkpoint comes back, to be resumed on the build machine (docs/gpu.md).
    tar -czf "$OUTDIR/gpu-ckpt.tar.gz" -C "$w" gpu2.save ds.json || return 1
    python3 "$ROOT/bench/gpu/check_dstrain.py" "$w"
}

# GPT-2-124M shape (12 layers, 768 wide, seq 1024, bf16) at W=1 on DEV: the step
# time against PyTorch eager's (the torch step's log), one async save's stall, then
# the same with the optimizer offloaded to the CPU (offload_optimizer device cpu). A
# corpus of bytes is enough (bytes are tokens).
dstrain_124m() {
    local w=$LOGS/dstrain-work off
    mkdir -p "$w" || return 1
    # 0: stage 1; 1: stage 1, optimizer offloaded; 2: stage 3, optimizer and parameters offloaded
    for off in 0 1 2; do
        local o="" stage=1
        [ "$off" != 0 ] && o=', "offload_optimizer": {"device": "cpu", "pin_memory": true}'
        [ "$off" = 2 ] && o="$o"', "offload_param": {"device": "cpu", "pin_memory": true}' && stage=3
        cat >"$w/gpt2_$off.json" <<EOF
{"train_micro_batch_size_per_gpu": ${GPU_CHECK_GPT2_BATCH:-8}, "gradient_accumulation_steps": 1, "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 0.0006, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}},
 "gradient_clipping": 1.0, "zero_optimization": {"stage": $stage$o}}
EOF
    done
    python3 -c "import sys; sys.stdout.buffer.write(bytes(range(256)) * 512)" >"$w/corpus.bin"
    local shape=(--n_layer "${GPU_CHECK_GPT2_LAYERS:-12}" --n_head 12 --n_embd 768 --seq_len "${GPU_CHECK_GPT2_SEQ:-1024}"
        --eval_windows 1)
    # Device memory held after start-up, without and with the optimizer offloaded.
    dstrain --deepspeed "$w/gpt2_0.json" --data "$w/corpus.bin" "${shape[@]}" --device "$DEV" --print_memory \
        >"$w/gpt2_mem0.json" || return 1
    dstrain --deepspeed "$w/gpt2_1.json" --data "$w/corpus.bin" "${shape[@]}" --device "$DEV" --print_memory \
        >"$w/gpt2_mem1.json" || return 1
    dstrain --deepspeed "$w/gpt2_0.json" --data "$w/corpus.bin" "${shape[@]}" --max_steps 6 --device "$DEV" \
        --log_file "$w/gpt2.log" --save_dir "$w/gpt2.save" --save_steps 4 || return 1
    rm -rf "$w/gpt2.save"
    dstrain --deepspeed "$w/gpt2_1.json" --data "$w/corpus.bin" "${shape[@]}" --max_steps 4 --device "$DEV" \
        --log_file "$w/gpt2_off.log" || return 1
    dstrain --deepspeed "$w/gpt2_2.json" --data "$w/corpus.bin" "${shape[@]}" --device "$DEV" --print_memory \
        >"$w/gpt2_mem2.json" || return 1
    dstrain --deepspeed "$w/gpt2_2.json" --data "$w/corpus.bin" "${shape[@]}" --max_steps 3 --device "$DEV" \
        --log_file "$w/gpt2_poff.log" || return 1
    python3 "$ROOT/bench/gpu/check_dstrain.py" --gpt2 "$w" "$LOGS/torch.log" "${GPU_CHECK_GPT2_LAYERS:-12}" 768 \
        "${GPU_CHECK_GPT2_SEQ:-1024}" "${GPU_CHECK_GPT2_BATCH:-8}"
}
run_all() {
    mkdir -p "$OUTDIR"
    : >"$REPORT"
    LOGS=$(mktemp -d)
    setup_env
    say "gpu-check report $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    say "carry: $(sed -n 1,2p "$CARRY/MANIFEST" | tr '\n' ' ')"
    say "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2 | tr '\n' ' ')"
    say "nvcc: $(nvcc --version 2>/dev/null | tail -1)"
    say "torch: $(python3 -c 'import torch; print(torch.__version__, torch.version.cuda)' 2>&1 | tail -1)"
    say "mpi: $MPI_FROM"
    local missing
    missing=$(for f in "$CARRY"/bin/*; do ldd "$f" 2>/dev/null | grep 'not found'; done | sort -u)
    if [ -n "$missing" ]; then say "[FAIL] env: unresolved libraries:"; say "$missing"; else say "[PASS] env: libraries resolve"; fi
    # In the order of what matters most, should the budget run out.
    step kernels 100 env DSCKPT_REQUIRE_CUDA=1 "$CARRY/bin/test_kernels_cuda"
    export -f dstrain_steps dstrain_124m
    export LOGS ROOT DEV OUTDIR GEMM
    step dstrain_loss_ckpt 120 bash -c dstrain_steps
    step snapshot 45 "$CARRY/bin/gpu_bench" snapshot 2048
    # The same shapes as dstrain's: its vocabulary is the 256 byte values.
    step torch 120 python3 "$ROOT/bench/gpu/torch_gpt2_step.py" --batch 8 --steps 8 --vocab 256
    step dstrain_gpt2 150 bash -c dstrain_124m
    step offload 45 "$CARRY/bin/gpu_bench" offload 124
    if [ -x "$CARRY/bin/test_comm_cuda" ]; then
        step comm_w1 40 env DSCKPT_REQUIRE_CUDA=1 dsrun --num_procs 1 "$CARRY/bin/test_comm_cuda"
        step comm_w2 40 env DSCKPT_REQUIRE_CUDA=1 dsrun --num_procs 2 "$CARRY/bin/test_comm_cuda"
    else
        say "[SKIP] comm: this build has no test_comm_cuda (runtime/cuda not built)"
    fi
    say "total $(($(date +%s) - T_START)) s"
    tar -czf "$OUTDIR/gpu-check-logs.tar.gz" -C "$LOGS" . 2>/dev/null
    rm -rf "$LOGS"
    echo "gpu-check: report in $REPORT"
}

case $mode in
prepare) prepare ;;
dry) dry_run ;;
rehearse)
    # The dstrain steps on this machine, through the cpu-strict table and build/'s
    # programs (a small model for the GPT-2 step): checks the script, not a GPU.
    OUTDIR=${OUT:-$ROOT/gpu-check-rehearse}
    REPORT=$OUTDIR/gpu-check-report.txt
    BUDGET_S=${GPU_CHECK_BUDGET_S:-1200}
    DEV=cpu-strict
    GEMM=bf16
    export GPU_CHECK_GPT2_LAYERS=1 GPU_CHECK_GPT2_SEQ=64 GPU_CHECK_GPT2_BATCH=1
    export PATH="$ROOT/build:$PATH"
    # The checks read checkpoints with Python's safetensors: the test venv's, if set up.
    [ -x "$ROOT/.venv/bin/python3" ] && export PATH="$ROOT/.venv/bin:$PATH"
    mkdir -p "$OUTDIR"
    : >"$REPORT"
    LOGS=$(mktemp -d)
    export -f dstrain_steps dstrain_124m
    export LOGS ROOT DEV OUTDIR GEMM
    say "gpu-check rehearsal on the CPU (device $DEV, build/), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    rc=0
    step dstrain_loss_ckpt 900 bash -c dstrain_steps || rc=1
    step dstrain_gpt2 900 bash -c dstrain_124m || rc=1
    tar -czf "$OUTDIR/gpu-check-logs.tar.gz" -C "$LOGS" . 2>/dev/null
    rm -rf "$LOGS"
    echo "gpu-check: rehearsal report in $REPORT"
    exit $rc
    ;;
run)
    if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        echo "gpu-check: no GPU visible (nvidia-smi -L lists none): dry run only"
        dry_run
        exit $?
    fi
    [ -f "$CARRY/MANIFEST" ] || die "no $CARRY: run scripts/gpu-check.sh --prepare on the build machine and carry .gpu-carry"
    run_all
    ;;
esac
