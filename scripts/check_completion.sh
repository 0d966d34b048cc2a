#!/usr/bin/env bash
# Verify Hydra's bash tab completion for the robex console scripts, as a user installs it:
#     for s in robex-prepare robex-train robex-attack robex-lrp-study robex-explain robex-verify robex-report; do
#         eval "$($s -sc install=bash)"; done
# then presses <TAB> after a partial command line. This script installs it the same way and calls the
# function bash runs on <TAB> (hydra_bash_completion) with the COMP_* variables bash would set.
#     bash scripts/check_completion.sh          # prints each line and its candidates; exit 1 on a miss
# Needs the console scripts on PATH (pip install -e .; here: PATH=.venv/bin:$PATH).
# (no `set -u`: Hydra's completion function reads unset variables, as in an interactive shell)
here=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$here/.venv/bin/robex-train" ] && PATH="$here/.venv/bin:$PATH"
for s in robex-prepare robex-train robex-attack robex-lrp-study robex-explain robex-verify robex-report; do
    eval "$($s -sc install=bash)" || { echo "FAIL: $s -sc install=bash"; exit 1; }
    complete -p "$s" > /dev/null || { echo "FAIL: no completion registered for $s"; exit 1; }
done

candidates() {  # what <TAB> offers at the end of the command line "$1"
    COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}
    read -ra COMP_WORDS <<< "$COMP_LINE"
    [[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
    COMPREPLY=()
    hydra_bash_completion
    printf '%s\n' "${COMPREPLY[@]}"
}

failures=0
expect() {  # expect "<command line>" "<candidate that must be offered>" ["<candidate that must not be>"]
    local got; got=$(candidates "$1")
    local ok=1
    grep -qxF -- "$2" <<< "$got" || ok=0
    if [ $# -ge 3 ] && grep -qxF -- "$3" <<< "$got"; then ok=0; fi
    printf '%s  %-34s -> %s\n' "$([ $ok = 1 ] && echo ok || echo FAIL)" "'$1'" "$(tr '\n' ' ' <<< "$got")"
    [ $ok = 1 ] || failures=$((failures + 1))
}

expect "robex-train defense=" "defense=pgd" "defense=pgd_schema"
expect "robex-train trainer.max_ep" "trainer.max_epochs="
expect "robex-train " "model=" "attack="
expect "robex-train experiment=" "experiment=quick" "experiment=quick_prepare"
expect "robex-prepare experiment=" "experiment=quick_prepare" "experiment=quick"
expect "robex-attack attack=" "attack=lrpc"
expect "robex-lrp-study lrp=" "lrp=quick"
expect "robex-explain explain=" "explain=quick"
expect "robex-verify verify/search=" "verify/search=binary"
expect "robex-report stri" "strict="
exit $((failures > 0))
