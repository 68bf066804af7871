"""Print benchmark JSON files as Markdown, for pasting into docs/benchmarks.md.

    .venvs/django5/bin/python -m bench.report bench/results/inbound-*.json
"""
import argparse
import json
from pathlib import Path

from .common import markdown_table

DIGITS_BY_UNIT = {"ms": 2, "s": 2, "MB": 1}


def render(document):
    """Return one results file as Markdown: command, date, load, notes and every table."""
    parameters = document["parameters"]
    machine = document["machine"]
    lines = [
        f"#### {document['benchmark']} ({parameters.get('database', '')}), {document['started_at']}",
        "",
        f"`{' '.join(document['command'])}`",
        "",
        f"Load average at start: {format_load(machine.get('load_average_at_start'))}, at end: {format_load(machine['load_average'])}.",
        "",
    ]
    for note in document["notes"]:
        lines += [f"Note: {note}", ""]
    rows = document["results"]
    for table in dict.fromkeys(row["table"] for row in rows):
        table_rows = [row for row in rows if row["table"] == table]
        unit = table_rows[0]["unit"]
        digits = DIGITS_BY_UNIT.get(unit, 0)
        lines += [f"{table}:", "", markdown_table(table_rows, digits), ""]
    return "\n".join(lines)


def format_load(load):
    if not load:
        return "not recorded"
    return " ".join(f"{value:.1f}" for value in load)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="JSON files that the benchmark scripts wrote")
    arguments = parser.parse_args()
    for path in arguments.files:
        print(render(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
