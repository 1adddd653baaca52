"""The CI workflow users copy runs every molecule scenario: its matrix names exactly the directories
of molecule/ that hold a molecule.yml, each on the reference image, so a new scenario cannot be left
out of CI."""

import os

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORKFLOWS = os.path.join(ROOT, ".github", "workflows")


def scenarios():
    folder = os.path.join(ROOT, "molecule")
    return sorted(d for d in os.listdir(folder) if os.path.isfile(os.path.join(folder, d, "molecule.yml")))


def molecule_matrices():
    for name in sorted(os.listdir(WORKFLOWS)):
        with open(os.path.join(WORKFLOWS, name), encoding="utf-8") as handle:
            workflow = yaml.safe_load(handle)
        for job in workflow.get("jobs", {}).values():
            matrix = job.get("strategy", {}).get("matrix", {})
            if "scenario" in matrix:
                yield name, matrix


def test_the_workflow_runs_every_scenario_on_the_reference_image():
    matrices = list(molecule_matrices())
    assert matrices, "no workflow job has a scenario matrix"
    for name, matrix in matrices:
        assert sorted(matrix["scenario"]) == scenarios(), name
        assert len(matrix["image"]) == 1, "%s: every scenario on one reference image" % name


def test_extra_platforms_name_existing_scenarios():
    for name, matrix in molecule_matrices():
        for entry in matrix.get("include", []):
            assert entry["scenario"] in scenarios(), (name, entry)
