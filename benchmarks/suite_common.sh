# Shared by gpu_suite.sh and tpu_suite.sh (sourced, not run).

# suite_out_dir NAME ARGS...: checks that ARGS is one directory argument (or --help) and sets
# `out` to its absolute path, created if missing; exits 2 with the usage line otherwise.
suite_out_dir() {
  local name=$1
  shift
  local usage="usage: bash benchmarks/$name OUT_DIR  (OUT_DIR: a directory for the results, created if missing)"
  case "${1:-}" in
    -h|--help) echo "$usage"; exit 0 ;;
  esac
  if [[ $# -ne 1 || -z "$1" || "$1" == -* || ( -e "$1" && ! -d "$1" ) ]]; then
    echo "$name: expected one argument, a directory; got: $*" >&2
    echo "$usage" >&2
    exit 2
  fi
  mkdir -p "$1"
  out=$(cd "$1" && pwd)
}

# run_benchmarks OUT SKIP_EXPLICIT_ABOVE: the benchmarks both suites run, from benchmarks/;
# the explicit form (the reference's algorithm, the in-run baseline) only up to batch
# SKIP_EXPLICIT_ABOVE for 9L-S.
run_benchmarks() {
  local out=$1 skip_explicit=$2
  python dau_forms.py --arch 9L-S --batches 16,64,256,1024 --dtypes float32,bfloat16 \
      --steps 20 --skip_explicit_above "$skip_explicit" | tee "$out/train_9ls.jsonl"
  python dau_forms.py --arch 9L-L --batches 8,32 --dtypes float32,bfloat16 --steps 10 \
      --skip_explicit_above 8 | tee "$out/train_9ll.jsonl"
  python explain_throughput.py --arch 9L-S --batches 256 --targets predicted,all --steps 20 \
      | tee "$out/explain_9ls.jsonl"
  python end_to_end.py --dataset shapes --arch 9L-S --batch 1024 --workers 8 --steps 50 \
      | tee "$out/end_to_end.jsonl"
  python norm_factors.py --arch 9L-S --impls mgs,cholqr2,cholqr2_lapack \
      | tee "$out/norm_factors_9ls.jsonl"
  python dau_forms.py --arch 9L-S --batches 256 --steps 10 --interleaved_rounds 3 \
      | tee "$out/norm_share_9ls.jsonl"
}
