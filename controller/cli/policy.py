"""`burstctl policy validate PATH...` (check policy files, one FILE:LINE:COL line per problem) and
`burstctl policy schema` (the JSON Schema editors use, or with --markdown the field reference)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controller.errors import BurstError
from policies.loader import load_policies
from policies.schema import policy_reference_markdown, policy_schema_text, with_reference


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policy", help="check policy files; print the policy JSON Schema")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION")
    psub.required = True
    validate = psub.add_parser(
        "validate", help="check policy files and directories",
        description="Check policy files (a directory means its *.yaml and *.yml files). Exit 0 when all are "
                    "valid; otherwise print one line per problem on stdout, FILE:LINE:COL: field.path: "
                    "message, a summary on stderr, and exit 2.")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="policy file or directory")
    validate.add_argument("-q", "--quiet", action="store_true", help="print nothing when all are valid")
    validate.set_defaults(func=_validate)
    schema = psub.add_parser("schema", help="print the policy JSON Schema (or the Markdown field reference)")
    schema.add_argument("--output", "-o", metavar="FILE", help="write it to FILE instead of stdout")
    schema.add_argument("--markdown", action="store_true", help="the field reference as Markdown tables")
    schema.add_argument("--update-doc", metavar="MD",
                        help="also refresh the generated reference between the policy-reference markers in MD")
    schema.set_defaults(func=_schema)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _validate(args: argparse.Namespace) -> int:
    result = load_policies(args.paths)
    files = _count(len(result.files), "file", "files")
    policies = _count(len(result.policies), "policy", "policies")
    if result.problems:
        for problem in result.problems:
            print(problem)
        sys.stdout.flush()
        print(f"burstctl policy validate: {_count(len(result.problems), 'problem', 'problems')} in {files} "
              f"({policies} valid)", file=sys.stderr)
        return 2
    if not args.quiet:
        names = ", ".join(sorted(result.policies))
        print(f"OK: {policies} in {files} ({names})")
    return 0


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BurstError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _schema(args: argparse.Namespace) -> int:
    if args.update_doc:
        try:
            document = Path(args.update_doc).read_text(encoding="utf-8")
            _write(args.update_doc, with_reference(document))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise BurstError(f"cannot update {args.update_doc}: {exc}") from exc
        if not args.output:
            return 0
    text = policy_reference_markdown() if args.markdown else policy_schema_text()
    if args.output:
        _write(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
