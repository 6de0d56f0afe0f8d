"""Where every artifact of a build lives, named once.

Each path is the relative POSIX string that dvc.yaml and DVC's APIs use; a caller whose build lies
elsewhere joins its root itself (`root / layout.PROMPTS`). Fixed paths are constants, per-student (S)
and per-teacher (T) paths are functions of the names. Each group says which stage writes it.
tests/test_stage_deps.py checks dvc.yaml's data deps and outs against this module, so a path that
changes here and not there (or there and not here) fails.

It imports nothing from persyn, so every floor of the library may use it.
"""

from __future__ import annotations

from typing import Literal

# The roots every build output lies under, and the names of each student's metrics and plots files
# (a Literal: a misspelt name fails the type check, and the layout test can list every file).
DATA = "data"
METRICS = "metrics"
PLOTS = "plots"
Metric = Literal["router", "route", "dataset", "train", "eval"]
Plot = Literal["teacher_shares", "train_loss", "accuracy"]

# Inputs no stage writes: local prompt files (params' prompts.path points inside) and the weights of
# local:models/<name> models, which the models stage hashes.
SOURCE = "data/source"
LOCAL_MODELS = "models"

# models: one identity file per configured model, rewritten only when a model changed.
MODELS = "data/models"
EMBED_MODEL = "data/models/embed.json"
QUALITY_MODEL = "data/models/quality.json"
ROUTER_MODEL = "data/models/router.json"
TEACHER_MODELS = "data/models/teachers"
STUDENT_MODELS = "data/models/students"


def teacher_model(teacher: str) -> str:
    return f"{TEACHER_MODELS}/{teacher}.json"


def student_model(student: str) -> str:
    return f"{STUDENT_MODELS}/{student}.json"


# prompts and embed: the deduped, split prompts and one vector per prompt.
PROMPTS = "data/prompts.parquet"
EMBEDDINGS = "data/embeddings.parquet"

# sample@T: teacher T's answers on the router subset S.
SAMPLE = "data/sample"


def sample(teacher: str) -> str:
    return f"{SAMPLE}/{teacher}.parquet"


# score@S-T: quality and student S's learnability of T's answers on S.
SCORES = "data/scores"


def scores_dir(student: str) -> str:
    return f"{SCORES}/{student}"


def scores(student: str, teacher: str) -> str:
    return f"{scores_dir(student)}/{teacher}.parquet"


# fit_router@S: the router (a folder: weights and router.json), and metrics(S, "router").
ROUTER = "data/router"


def router(student: str) -> str:
    return f"{ROUTER}/{student}"


# route@S: the prompt ids S routes to each teacher, the order the fallback asks them in, and
# metrics(S, "route").
ROUTES = "data/routes"
ROUTE_ORDER = "data/route_order"


def routes_dir(student: str) -> str:
    return f"{ROUTES}/{student}"


def routes(student: str, teacher: str) -> str:
    return f"{routes_dir(student)}/{teacher}.parquet"


def route_order(student: str) -> str:
    return f"{ROUTE_ORDER}/{student}.parquet"


# generate@S-T: T's answers on the prompts S routed to it.
GENERATED = "data/generated"


def generated_dir(student: str) -> str:
    return f"{GENERATED}/{student}"


def generated(student: str, teacher: str) -> str:
    return f"{generated_dir(student)}/{teacher}.parquet"


# sharing: what the students shared of the teachers' generations.
SHARING_METRICS = "metrics/sharing.json"

# fallback@S: the answers re-asked of the next teachers.
FALLBACK = "data/fallback"


def fallback(student: str) -> str:
    return f"{FALLBACK}/{student}.parquet"


# assemble@S: the dataset (shards and card), the oracle's scores, metrics(S, "dataset") and
# plot(S, "teacher_shares").
DATASET = "data/dataset"
ORACLE = "data/oracle"


def dataset(student: str) -> str:
    return f"{DATASET}/{student}"


def oracle(student: str) -> str:
    return f"{ORACLE}/{student}"


def oracle_scores(student: str, teacher: str) -> str:
    """The oracle's scores of T's answers (empty under the other strategies)."""
    return f"{oracle(student)}/{teacher}.parquet"


# train@S: the fine-tuned student, metrics(S, "train") and plot(S, "train_loss").
TRAINED = "data/student"


def trained(student: str) -> str:
    return f"{TRAINED}/{student}"


# evaluate@S: per-prompt predictions, metrics(S, "eval") and plot(S, "accuracy").
EVAL = "data/eval"


def predictions(student: str) -> str:
    return f"{EVAL}/{student}/predictions.parquet"


# Each student's metrics and plots, written by the stages above (DVC metrics and plots, not cached).
def metrics(student: str, name: Metric) -> str:
    return f"{METRICS}/{student}/{name}.json"


def plot(student: str, name: Plot) -> str:
    return f"{PLOTS}/{student}/{name}.csv"


# Run logs, not versioned (git-ignored, never a DVC output): sample@T and generate@S-T write what
# the run did (generated now, reused, tokens, cost); the report and the benches read them.
RUNS = "runs"


def run_log(stage: str) -> str:
    """`stage` as DVC names it: sample@T, generate@S-T."""
    return f"{RUNS}/{stage}.json"


# persyn release: releases/<name>/v<version>/, outside the build, with the shards under
# RELEASE_DATA beside the card and provenance.json.
RELEASES = "releases"
RELEASE_DATA = "data"
RELEASE_SHARDS = "data/train-*.parquet"


def release(name: str, version: str) -> str:
    return f"{RELEASES}/{name}/v{version}"
