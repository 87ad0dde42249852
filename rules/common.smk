# Shared wiring: resolved job specs (they are the rules' params, so a config edit reruns exactly the
# jobs it affects), software environments and paths.
import json

from goodtransfer import config as gtc

PYTHON_ENV = "../envs/pytorch.yaml"
PYTHON_CONTAINER = "containers/pytorch.sif"
REPORT_ENV = "../envs/report.yaml"
REPORT_CONTAINER = "containers/report.sif"
GT = "python -m goodtransfer --threads {threads}"


def spec_json(spec):
    return json.dumps(spec, sort_keys=True)


def dataset_root(name):
    return gtc.dataset_of(config, name)["root"]


def dataset_check(name):
    return f"results/datasets/{name}.json"


def pretrain_dataset(run):
    return gtc.pretrain_spec(config, run)["dataset"]


def checkpoint_of(run):
    return f"results/pretrain/{run}/checkpoint.pt"
