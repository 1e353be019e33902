"""Rebuild tests/data/math_solution_cases.jsonl and math_solution_cases_debatable.jsonl: real model-written solutions to
MATH problems with correctness labels made by others (issue 18).

Not run by the tests (it needs local git copies); kept so that every row can be traced to its source:

    python tests/data/build_math_solution_cases.py MIRRORS_DIR [SHARED_DATA_DIR] [--all OUT.jsonl]

where MIRRORS_DIR holds bare git copies named like `QwenLM+ProcessBench/repo` (see SOURCES) and SHARED_DATA_DIR is
`../shared/data` (MATH-500); `--all OUT.jsonl` writes every row (all 1,000 ProcessBench MATH rows and the PRM800K
rows, nothing moved to the debatable file) to OUT instead, for `python -m rewards.agreement --cases OUT.jsonl`. Only
data is read (JSON files and a README's JSON example); nothing is imported or
executed from the sources.

Sources (each row names its repository, commit, path and record):

* ProcessBench's MATH split (Qwen team, Apache-2.0 as stated on its dataset card, huggingface.co/datasets/Qwen/
  ProcessBench): 1,000 solutions by ten open models (Llama-3/3.1, Qwen2/2.5, Qwen2.5-Math, 1.5B-72B) to MATH test
  problems, each with `final_answer_correct`, the ProcessBench authors' label of the final answer. The file was in
  QwenLM/ProcessBench until commit 606615c ("move dataset to HF"); it is read at 2f2fd8a, where it was added. The
  solution is the `steps` joined by blank lines, as the model wrote paragraphs.
* PRM800K (OpenAI, MIT): the annotated sample of the README (its solution ends in `# Answer`; the README says "We
  can see this solution is incorrect"), and one of PRM800K's released scored samples (`is_correct` by PRM800K's
  grader) as quoted in tongyx361/reward-by-prm800k (Apache-2.0). PRM800K's own data files are Git LFS objects,
  which the stored copies do not hold.

The gold is MATH's answer (hendrycks/math, MIT): MATH-500's `answer` (../shared/data/math500) when the problem is
there, otherwise the answer of the MATH test problem with the same text in MARIO-Math-Reasoning/MARIO_EVAL's table
of the MATH test set (data/math_testset_annotation.json; its answers equal MATH-500's for all 500 problems the two
share; the table is used as an index only, the string is MATH's).

Selection (a few hundred rows; deterministic): every ProcessBench row of the issue's failure classes (`final
answer is` followed by display math; an empty `\\boxed{}` in prose; a gold unit written `\\text {...}`; no box and
no answer phrase, which holds the search loops), and 140 further rows drawn at random (seed 18) from the rest,
70 labelled correct and 70 labelled wrong; plus the two PRM800K rows. Nothing is chosen by how a grader scores it.

Debatable rows: every row of the whole split on which our reward or math-verify disagrees with the label was read
by hand. Where the label contradicts the value the solution marks as its answer (a box, a final-answer line)
compared with the gold, because the label also requires a form (lowest terms, a common fraction, a ratio `a:b`,
"simplify") or does not match the solution, the row goes to math_solution_cases_debatable.jsonl (written only when
the selection holds such a row) with the decision taken here (the graders' value comparison: what a published
accuracy counts) and why (DEBATABLE below). Rows a grader misses stay in the corpus. The seeded selection holds
none of the seven.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (mirror folder, repository, commit, path)
PROCESSBENCH = ("QwenLM+ProcessBench", "QwenLM/ProcessBench", "2f2fd8ae590aeb949f7be265478b05280f93db68",
                "dataset/math.json")
MATH_TABLE = ("MARIO-Math-Reasoning+MARIO_EVAL", "MARIO-Math-Reasoning/MARIO_EVAL",
              "13584f20b71ffc6e9873e86481054849ed015065", "data/math_testset_annotation.json")
PRM800K_README = ("openai+prm800k", "openai/prm800k", "7ecc794703b2877f63226f2477a49b34f9b25163", "README.md")
PRM800K_SCORED = ("tongyx361+reward-by-prm800k", "tongyx361/reward-by-prm800k",
                  "c8452fb67a5b4f8fc12a1761719256d16a5ba502", "datasets/examples/RM-scored-example.json")

PROCESSBENCH_LABEL = ("ProcessBench final_answer_correct: the ProcessBench authors' label of whether the solution's "
                      "final answer is correct")
RANDOM_PER_LABEL = 70
SEED = 18

# ProcessBench id -> why its label is debatable; the decision is the graders' value comparison (True: the marked
# answer equals the gold). Each was read by hand (see the module docstring).
DEBATABLE = {
    "math-50": "the solution boxes 7, the gold, then argues for 11 without boxing it; the label marks the answer "
               "wrong, graders read the box",
    "math-123": "411/333 equals the gold 137/111; the label requires lowest terms, which graders do not check",
    "math-221": "23/2 equals the gold 11.5 and the problem asks for no form; the label does not match the answer",
    "math-247": "-58/87 equals the gold -2/3; the label requires a simplified fraction, which graders do not check",
    "math-248": "10.5\\pi equals the gold 21\\pi/2; the label requires a common fraction, which graders do not check",
    "math-278": "1/2 is the ratio 1:2 of the gold; the label requires the form a:b",
    "math-392": "1/(\\sin x \\cos x) - \\tan x equals \\cot x; the label requires the simplified form",
}

_DISPLAY_AFTER_PHRASE_RE = re.compile(r"final answer is[^\n]{0,20}\n?\s*(?:\\\[|\$\$)", re.IGNORECASE)
_EMPTY_BOX_RE = re.compile(r"\\boxed\s*\{\s*\}")
_SPACED_TEXT_RE = re.compile(r"\\(?:text|mbox)\s+\{")
_ANSWER_PHRASE_RE = re.compile(r"answer is|final answer", re.IGNORECASE)


def git_show(mirrors: Path, folder: str, commit: str, path: str) -> str:
    return subprocess.run(["git", "-C", str(mirrors / folder / "repo"), "show", f"{commit}:{path}"],
                          capture_output=True, text=True, check=True).stdout


def classes(solution: str, gold: str) -> list[str]:
    """The issue's failure classes a row belongs to (none: an ordinary row)."""
    found = []
    if _DISPLAY_AFTER_PHRASE_RE.search(solution):
        found.append("final-answer-display")
    if _EMPTY_BOX_RE.search(solution):
        found.append("box-in-prose")
    if _SPACED_TEXT_RE.search(gold):
        found.append("spaced-text-unit")
    if "\\boxed" not in solution and not _ANSWER_PHRASE_RE.search(solution):
        found.append("no-conclusion")
    return found


def processbench_rows(mirrors: Path, shared: Path) -> list[dict]:
    folder, repo, commit, path = PROCESSBENCH
    records = json.loads(git_show(mirrors, folder, commit, path))
    math500 = {}
    if (shared / "math500" / "test.jsonl").exists():
        for number, line in enumerate((shared / "math500" / "test.jsonl").open(encoding="utf-8")):
            row = json.loads(line)
            math500[row["problem"].strip()] = {**row, "line": number + 1}
    t_folder, t_repo, t_commit, t_path = MATH_TABLE
    table = {r["question"].strip(): r["answer"] for r in json.loads(git_show(mirrors, t_folder, t_commit, t_path))}
    rows = []
    for record in records:
        problem = record["problem"].strip()
        if problem in math500:
            gold = math500[problem]["answer"]
            line = math500[problem]["line"]
            gold_source = f"MATH test answer (hendrycks/math, MIT): MATH-500 answer, math500/test.jsonl line {line}"
        else:
            gold = table[problem]
            gold_source = (f"MATH test answer (hendrycks/math, MIT) looked up by problem text in "
                           f"{t_repo}@{t_commit[:12]}:{t_path}")
        solution = "\n\n".join(record["steps"])
        rows.append({
            "gold": gold,
            "prediction": solution,
            "expected": bool(record["final_answer_correct"]),
            "source": f"{repo}@{commit[:12]}:{path}#{record['id']}",
            "problem_id": record["id"],
            "generator": record["generator"],
            "label_source": PROCESSBENCH_LABEL,
            "gold_source": gold_source,
            "classes": classes(solution, gold),
        })
    return rows


def _strip_js_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith("//"))


def prm800k_rows(mirrors: Path) -> list[dict]:
    folder, repo, commit, path = PRM800K_README
    readme = git_show(mirrors, folder, commit, path)
    block = readme.split("```javascript", 1)[1].split("```", 1)[0]
    sample = json.loads(_strip_js_comments(block))
    question = sample["question"]
    rows = [{
        "gold": question["ground_truth_answer"],
        "prediction": "\n".join(question["pre_generated_steps"]),
        "expected": False,
        "source": f"{repo}@{commit[:12]}:{path}#annotated-sample",
        "problem_id": "PRM800K README sample (GCD of 20! and 200,000)",
        "generator": "PRM800K phase-2 generator (GPT-4 base)",
        "label_source": "PRM800K README: 'We can see this solution is incorrect' (OpenAI)",
        "gold_source": "PRM800K ground_truth_answer (MATH, MIT)",
        "classes": ["answer-heading"],
    }]
    folder, repo, commit, path = PRM800K_SCORED
    scored = json.loads(git_show(mirrors, folder, commit, path))
    rows.append({
        "gold": scored["ground_truth_answer"],
        "prediction": "\n\n".join(scored["steps"]),
        "expected": bool(scored["is_correct"]),
        "source": f"{repo}@{commit[:12]}:{path} (a PRM800K scored test sample, openai/prm800k, MIT)",
        "problem_id": scored["unique_id"],
        "generator": "PRM800K scored-sample generator (GPT-4 base)",
        "label_source": "PRM800K scored samples is_correct: PRM800K's grader (grading/grader.py)",
        "gold_source": "PRM800K ground_truth_answer (MATH, MIT)",
        "classes": ["answer-heading"],
    })
    return rows


def select(rows: list[dict]) -> list[dict]:
    """Every failure-class row, and RANDOM_PER_LABEL ordinary rows of each label drawn with SEED."""
    chosen = [row for row in rows if row["classes"]]
    rng = random.Random(SEED)
    for label in (True, False):
        ordinary = [row for row in rows if not row["classes"] and row["expected"] is label]
        chosen += rng.sample(ordinary, RANDOM_PER_LABEL)
    return sorted(chosen, key=lambda row: int(row["problem_id"].split("-")[1]))


def main(mirrors: Path, shared: Path, everything: Path | None = None) -> None:
    if everything is not None:
        rows = processbench_rows(mirrors, shared) + prm800k_rows(mirrors)
        with open(everything, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{everything}: {len(rows)} rows ({sum(r['expected'] for r in rows)} expected True)")
        return
    rows = select(processbench_rows(mirrors, shared)) + prm800k_rows(mirrors)
    cases, debatable = [], []
    for row in rows:
        why = DEBATABLE.get(row["problem_id"])
        if why is None:
            cases.append(row)
        else:
            debatable.append({**row, "expected": True, "source_expected": row["expected"], "why": why})
    for name, table in (("math_solution_cases.jsonl", cases), ("math_solution_cases_debatable.jsonl", debatable)):
        if not table:
            continue
        with open(HERE / name, "w", encoding="utf-8") as f:
            for row in table:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{name}: {len(table)} rows ({sum(r['expected'] for r in table)} expected True)")


if __name__ == "__main__":
    args = sys.argv[1:]
    everything = None
    if "--all" in args:
        at = args.index("--all")
        everything = Path(args[at + 1])
        del args[at : at + 2]
    main(Path(args[0] if args else "/work/.mirror"),
         Path(args[1] if len(args) > 1 else HERE.parent.parent.parent / "shared" / "data"), everything)
