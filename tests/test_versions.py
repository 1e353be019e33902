"""Every results file records the library versions that produced it (grpo_ext.versions)."""

import accelerate
import datasets
import torch
import transformers
import trl

from benchmarks.common import environment, versions_line, write_report
from grpo_ext.versions import LIBRARIES, library_versions


def test_library_versions_are_the_imported_ones():
    versions = library_versions()
    assert list(versions) == list(LIBRARIES)
    for module in (torch, transformers, trl, accelerate, datasets):
        assert versions[module.__name__] == module.__version__
    assert library_versions(("no-such-distribution-x",)) == {"no-such-distribution-x": None}


def test_benchmark_reports_record_versions_and_say_where_they_went(tmp_path, capsys):
    path = write_report(tmp_path / "out", "demo", {"figure": 1.0}, "| a |\n|---|", also_written=(tmp_path / "x.png",))
    import json

    payload = json.loads(path.read_text())
    assert payload["environment"]["datasets"] == datasets.__version__
    assert payload["environment"]["transformers"] == transformers.__version__
    markdown = (tmp_path / "out" / "demo.md").read_text()
    assert f"transformers {transformers.__version__}, trl {trl.__version__}" in markdown
    assert markdown.strip().endswith(versions_line(environment()))
    printed = capsys.readouterr().out
    assert printed.rstrip().splitlines()[-3:] == [f"  {tmp_path / 'out' / 'demo.json'}",
                                                   f"  {tmp_path / 'out' / 'demo.md'}", f"  {tmp_path / 'x.png'}"]
