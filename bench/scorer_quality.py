"""How far the vulnerability scorer can be trusted on code it was not written against.

Two measurements, per CWE, with Wilson 95% intervals:

* CyberSecEval (Meta PurpleLlama) instruct, the Python cases whose CWE the scenario
  library covers (after `canonical_cwe`: CWE-328 counts as CWE-327). Every case is a
  window (~20 lines, often cut mid-block) around a line an insecure-code detector
  flagged, so it gives recall only. Scored as given: no hand repair; the scorer's own
  tolerant path handles what does not compile, and the report says how many needed it
  and how many it could not score (unscored counts as missed here).
* The scenario library's reference completions (prefix + completion): recall on the
  vulnerable ones and the false-flag rate on the secure ones. The rules were written
  against this library, so these numbers are a floor check, not an outside measurement.
* Cross-CWE: each CyberSecEval window scored for our CWEs it is not labelled with, an
  upper bound on false flags on outside code (a flag may be a second, real flaw).

    .venv/bin/python bench/scorer_quality.py [--cyberseceval ../shared/data/code/cyberseceval/instruct.json]

Writes bench/results/scorer_quality.json and .md (or --out PREFIX) and prints the tables. The
CyberSecEval file lives outside the repository (../shared); without it the script says so,
prints the library part and exits 0 without writing results.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from scipy.stats import binomtest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backdoors.code_scenarios import CWE_NAMES, SCENARIOS, canonical_cwe  # noqa: E402
from backdoors.vulnerability import DETECTOR_BY_CWE, ScanResult, scan_many  # noqa: E402

DEFAULT_CYBERSECEVAL = REPO.parent / "shared" / "data" / "code" / "cyberseceval" / "instruct.json"


def share(positives: int, n: int) -> dict:
    """positives/n with a Wilson 95% interval; None where n is 0."""
    if n == 0:
        return {"n": 0, "positives": 0, "rate": None, "low": None, "high": None}
    interval = binomtest(positives, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"n": n, "positives": positives, "rate": positives / n, "low": interval.low, "high": interval.high}


def deciding_detector(result: ScanResult, cwe: str) -> str:
    """Which detector flagged the sample: bandit, an AST rule, or both."""
    counted = [f.split(":", 1)[0] for f in result.findings if f.endswith(f":{cwe}")]
    kinds = {"ast-rule" if test.startswith("ast-") else "bandit" for test in counted}
    return "+".join(sorted(kinds)) or "none"


def cyberseceval_cases(path: Path) -> list[dict]:
    cases = json.loads(path.read_text(encoding="utf-8"))
    return [c for c in cases if c["language"] == "python" and canonical_cwe(c["cwe_identifier"]) in CWE_NAMES]


def measure_cyberseceval(cases: list[dict]) -> dict:
    results = scan_many([c["origin_code"] for c in cases], [c["cwe_identifier"] for c in cases])
    by_cwe: dict[str, dict] = {}
    for cwe in CWE_NAMES:
        mine = [(c, r) for c, r in zip(cases, results) if canonical_cwe(c["cwe_identifier"]) == cwe]
        if not mine:
            continue
        by_cwe[cwe] = {
            "recall": share(sum(r.vulnerable for _, r in mine), len(mine)),
            "parse_as_given": sum(r.parses for _, r in mine),
            "tolerant_path": sum(r.repaired for _, r in mine),
            "flagged_via_tolerant_path": sum(r.repaired and r.vulnerable for _, r in mine),
            "unscored": sum(not r.scored for _, r in mine),
            "decided_by": dict(Counter(deciding_detector(r, cwe) for _, r in mine if r.vulnerable)),
            "missed_prompt_ids": [c.get("prompt_id") for c, r in mine if not r.vulnerable],
        }
    total = len(results)
    overall = {
        "recall": share(sum(r.vulnerable for r in results), total),
        "parse_as_given": sum(r.parses for r in results),
        "tolerant_path": sum(r.repaired for r in results),
        "unscored": sum(not r.scored for r in results),
    }
    return {"by_cwe": by_cwe, "overall": overall}


def measure_cross_cwe(path: Path) -> dict:
    """Every CyberSecEval Python window scored for each of our CWEs it is *not* labelled with.

    Outside code with no flaw of that CWE known: a flag is a false flag or a second flaw the
    window happens to hold, so the rate is an upper bound on the false-flag rate there.
    """
    cases = [c for c in json.loads(path.read_text(encoding="utf-8")) if c["language"] == "python"]
    by_cwe: dict[str, dict] = {}
    for cwe in CWE_NAMES:
        pool = [c for c in cases if canonical_cwe(c["cwe_identifier"]) != cwe]
        results = scan_many([c["origin_code"] for c in pool], [cwe] * len(pool))
        scored = [(c, r) for c, r in zip(pool, results) if r.scored]
        by_cwe[cwe] = {"flagged": share(sum(r.vulnerable for _, r in scored), len(scored)),
                       "flagged_prompt_ids": [c.get("prompt_id") for c, r in scored if r.vulnerable]}
    return by_cwe


def measure_library() -> dict:
    items = [(s, False, c) for s in SCENARIOS for c in s.secure] + [(s, True, c) for s in SCENARIOS for c in s.vulnerable]
    results = scan_many([s.full(c) for s, _, c in items], [s.cwe for s, _, _ in items])
    rows = [(canonical_cwe(s.cwe), vulnerable, s.templated, r) for (s, vulnerable, _), r in zip(items, results)]

    def rates(selected: list) -> dict:
        vulnerable = [r for _, v, _, r in selected if v]
        secure = [r for _, v, _, r in selected if not v]
        return {
            "recall": share(sum(r.vulnerable for r in vulnerable), len(vulnerable)),
            "false_flags": share(sum(r.vulnerable for r in secure), len(secure)),
        }

    return {
        "by_cwe": {cwe: {"detector": DETECTOR_BY_CWE.get(cwe), **rates([x for x in rows if x[0] == cwe])}
                   for cwe in CWE_NAMES},
        "overall": rates(rows),
        "hand_written_only": rates([x for x in rows if not x[2]]),
    }


def measure_truncated_library(keep: float = 0.6) -> dict:
    """The references cut off after `keep` of their characters (as a token limit cuts an answer):
    what the tolerant path makes of them. Rates over scored programs; unscored apart."""
    items = [(s, False, c) for s in SCENARIOS for c in s.secure] + [(s, True, c) for s in SCENARIOS for c in s.vulnerable]
    cut = [c[: int(len(c) * keep)] for _, _, c in items]
    results = scan_many([s.prefix + c for (s, _, _), c in zip(items, cut)], [s.cwe for s, _, _ in items],
                        [s.prefix for s, _, _ in items])
    out: dict = {"keep": keep}
    for label, wanted in (("vulnerable", True), ("secure", False)):
        mine = [r for (_, v, _), r in zip(items, results) if v is wanted]
        scored = [r for r in mine if r.scored]
        out[label] = {"flagged": share(sum(r.vulnerable for r in scored), len(scored)),
                      "unscored": share(sum(not r.scored for r in mine), len(mine)),
                      "compiled_as_given": sum(r.parses for r in mine)}
    return out


def _pct(rate: dict) -> str:
    if rate["rate"] is None:
        return "-"
    return f"{100 * rate['rate']:.1f}% [{100 * rate['low']:.1f}, {100 * rate['high']:.1f}] ({rate['positives']}/{rate['n']})"


def markdown(report: dict) -> str:
    lines = ["# Scorer quality", "", f"Command: `{report['command']}`", ""]
    cse = report.get("cyberseceval")
    if cse:
        lines += ["## CyberSecEval instruct, Python, our CWEs (recall as given, no hand repair)", "",
                  f"Source: `{report['cyberseceval_path']}`. Every case is a flagged window, so only recall is "
                  "measured. *Tolerant path*: cases that did not compile as given and were scored on their "
                  "largest compiling windows; *unscored*: nothing scoreable left (counted as missed).", "",
                  "| CWE | n | recall (Wilson 95%) | parse as given | tolerant path | flagged via tolerant path "
                  "| unscored | decided by |", "|---|---|---|---|---|---|---|---|"]
        for cwe, row in cse["by_cwe"].items():
            decided = ", ".join(f"{k} {v}" for k, v in sorted(row["decided_by"].items()))
            lines.append(f"| {cwe} | {row['recall']['n']} | {_pct(row['recall'])} | {row['parse_as_given']} | "
                         f"{row['tolerant_path']} | {row['flagged_via_tolerant_path']} | {row['unscored']} | {decided} |")
        o = cse["overall"]
        lines += [f"| **all** | {o['recall']['n']} | **{_pct(o['recall'])}** | {o['parse_as_given']} | "
                  f"{o['tolerant_path']} | | {o['unscored']} | |", ""]
        lines += ["### Cross-CWE flags (outside code, upper bound on false flags)", "",
                  "Every CyberSecEval Python window (all 351, our CWEs or not) scored for each of our CWEs it is "
                  "not labelled with; a flag is a false flag or a second flaw in the window. Over scored windows.",
                  "", "| scored for | flagged (Wilson 95%) |", "|---|---|"]
        for cwe, row in report["cyberseceval_cross_cwe"].items():
            lines.append(f"| {cwe} | {_pct(row['flagged'])} |")
        lines.append("")
    else:
        lines += ["CyberSecEval: not measured (file missing).", ""]
    lib = report["library"]
    lines += ["## Scenario library reference completions", "",
              "Recall on the vulnerable references, false flags on the secure ones. The rules were written "
              "against this library: a floor check, not an outside measurement.", "",
              "| CWE | detector | recall (Wilson 95%) | false flags (Wilson 95%) |", "|---|---|---|---|"]
    for cwe, row in lib["by_cwe"].items():
        lines.append(f"| {cwe} | {row['detector']} | {_pct(row['recall'])} | {_pct(row['false_flags'])} |")
    for label, key in (("all", "overall"), ("hand-written scenarios only", "hand_written_only")):
        row = lib[key]
        lines.append(f"| **{label}** | | {_pct(row['recall'])} | {_pct(row['false_flags'])} |")
    cut = report["library_truncated"]
    lines += ["", f"### The same references cut after {100 * cut['keep']:.0f}% of their characters", "",
              "As a token limit cuts an answer, usually mid-line; scored with the prefix set apart, so only "
              "the completion's lines count towards the kept share. Flag rates are over scored programs.", "",
              "| references | compiled as given | unscored | flagged, of scored |", "|---|---|---|---|"]
    for label in ("vulnerable", "secure"):
        row = cut[label]
        lines.append(f"| {label} | {row['compiled_as_given']}/{row['unscored']['n']} | {_pct(row['unscored'])} "
                     f"| {_pct(row['flagged'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cyberseceval", type=Path, default=DEFAULT_CYBERSECEVAL,
                        help="CyberSecEval instruct.json (default: ../shared/data/code/cyberseceval/instruct.json)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scorer_quality",
                        help="output prefix; .json and .md are written")
    args = parser.parse_args(argv)
    report: dict = {"command": "python bench/scorer_quality.py" + (" " + " ".join(argv) if argv else ""),
                    "library": measure_library(), "library_truncated": measure_truncated_library()}
    if args.cyberseceval.is_file():
        shown = args.cyberseceval.resolve()
        report["cyberseceval_path"] = (f"../{shown.relative_to(REPO.parent)}"
                                       if shown.is_relative_to(REPO.parent) else str(shown))
        report["cyberseceval"] = measure_cyberseceval(cyberseceval_cases(args.cyberseceval))
        report["cyberseceval_cross_cwe"] = measure_cross_cwe(args.cyberseceval)
    text = markdown(report)
    print(text)
    if "cyberseceval" not in report:
        print(f"NOTE: {args.cyberseceval} not found (a fresh clone may lack ../shared); CyberSecEval not "
              "measured, nothing written.")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
