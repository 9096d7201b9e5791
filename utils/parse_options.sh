#!/usr/bin/env bash
# Kaldi-style option parsing, sourced by scripts after they set their defaults.
#
#   --name value  or  --name=value   sets the shell variable name (dashes become
#   underscores); the variable must already exist, so a typo is an error.
#   --help / -h   prints $help_message and exits 0.
#
# Options stop at the first argument that does not start with "--"; the rest
# stay in "$@" as positional arguments.

__po_self=${0##*/}
while true; do
  [ -z "${1:-}" ] && break
  case "$1" in
    --help|-h)
      if [ -n "${help_message:-}" ]; then printf '%s\n' "$help_message"; else echo "$__po_self: no help message"; fi
      exit 0 ;;
    --*=*)
      __po_name=$(echo "${1%%=*}" | sed 's/^--//; s/-/_/g')
      __po_value=${1#*=}
      shift ;;
    --*)
      __po_name=$(echo "$1" | sed 's/^--//; s/-/_/g')
      if [ $# -lt 2 ]; then
        echo "$__po_self: option $1 needs a value" >&2; exit 1
      fi
      __po_value=$2
      shift 2 ;;
    *) break ;;
  esac
  if ! [[ "$__po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "$__po_self: malformed option --$__po_name" >&2; exit 1
  fi
  if [ -z "${!__po_name+set}" ]; then
    echo "$__po_self: unknown option --${__po_name//_/-} (see $__po_self --help)" >&2; exit 1
  fi
  # Booleans stay booleans, as in Kaldi.
  if [ "${!__po_name}" = true ] || [ "${!__po_name}" = false ]; then
    case "$__po_value" in true|false) ;; *)
      echo "$__po_self: option --${__po_name//_/-} takes true or false, not '$__po_value'" >&2; exit 1 ;;
    esac
  fi
  printf -v "$__po_name" '%s' "$__po_value"
done
unset __po_name __po_value __po_self
true
