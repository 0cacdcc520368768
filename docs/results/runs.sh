# Sourced by the studies' commands.sh: run and keep, over $W (the work
# directories, ignored by git) and $OUT (the committed records), from the
# checkout's root.

keep() {  # keep NAME: copy a work directory's records into $OUT/NAME
  mkdir -p "$OUT/$1"
  (cd "$W/$1" && find . \( -name metrics.jsonl -o -name 'selection_cycle*.csv' -o -name config.json \
      -o -name environment.json \) -not -path './shared/*' -print0 \
      | xargs -0 -I{} cp --parents {} "$OLDPWD/$OUT/$1/")
}

run() {  # run NAME FLAGS...: one run, timed into $OUT/times.txt, then its records kept
  local name=$1; shift
  echo "== $name: $(date -u +%FT%TZ) python -m launch.run $* --workdir=$W/$name"
  /usr/bin/time -f "$name: %e s wall, %U s user, %S s system" -a -o "$OUT/times.txt" \
    python -m launch.run "$@" --workdir="$W/$name" --noprogress
  keep "$name"
}
