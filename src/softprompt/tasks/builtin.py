"""The built-in tasks and their registry (`get_task`, `list_tasks`).

Each task reads local files under a data dir laid out like shared/data, or, without one, the Hugging Face hub.
A split missing from the sources is carved out of the train pool by `carve` -- one seeded mechanism for every
task -- and what was done is recorded in `task.split_info` (files, carve sizes, seed, loaded sizes).

Templates are for a decoder-only model that predicts the next token after the template; every verbalizer word
has a leading space and is one token in the SmolLM2 (GPT-2 style BPE) vocabulary.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softprompt.tasks.base import DataError, Example, Task
from softprompt.tasks.fewshot import carve
from softprompt.tasks.readers import Table, read_csv, read_jsonl, read_lines, read_tsv

DEFAULT_SEED = 0

# ---------------------------------------------------------------- local files


@dataclass(frozen=True)
class LocalFile:
    """One file under the data dir and how its rows become Examples."""

    path: str  # relative to the data dir; also the name in error locations ("glue/SST-2/train.tsv:17")
    text: str  # column holding the text
    label: str  # column holding the label
    label_values: tuple[str, ...]  # the raw label value of each label index; any other value is an error
    text_pair: str | None = None
    fmt: str = "tsv"  # tsv | csv | jsonl | label-text (TextFooler's "<label> <text>" lines)
    columns: tuple[str, ...] | None = None  # column names of a file without a header line

    @property
    def desc(self) -> str:
        return self.path

    def __call__(self, root: Path) -> list[Example]:
        path = root / self.path
        if not path.is_file():
            raise DataError(f"{path}: file not found (is {root} the data dir?)")
        stat = path.stat()
        return list(_parse(self, str(path), stat.st_mtime_ns, stat.st_size))


def _read_label_text(path: Path, name: str) -> Table:
    lines = read_lines(path, name)
    rows = []
    for loc, line in lines:
        label, space, text = line.partition(" ")
        if not space:
            raise DataError(f"{loc}: expected '<label> <text>', found no space")
        if len(text) >= 2 and text[0] == text[-1] == '"':  # CSV-style quoting, with "" for a quote inside
            text = text[1:-1].replace('""', '"')
        rows.append((loc, {"label": label, "text": text}))
    return Table(lines.name, lines.encoding, rows)


def _read(file: LocalFile, path: Path) -> Table:
    header = file.columns is None
    if file.fmt == "tsv":
        return read_tsv(path, header=header, columns=file.columns, name=file.path)
    if file.fmt == "csv":
        return read_csv(path, header=header, columns=file.columns, name=file.path)
    if file.fmt == "jsonl":
        return read_jsonl(path, name=file.path)
    if file.fmt == "label-text":
        return _read_label_text(path, file.path)
    raise ValueError(f"unknown file format {file.fmt!r}")


def _text(row: dict[str, Any], key: str, loc: str) -> str:
    value = row.get(key)
    if value is None:
        raise DataError(f"{loc}: missing field {key!r}")
    if not isinstance(value, str):
        raise DataError(f"{loc}: field {key!r} should be text, got {value!r}")
    if not value.strip():
        raise DataError(f"{loc}: empty {key!r}")
    return value.strip()  # GLUE SST-2 sentences end in a space


def _label(row: dict[str, Any], key: str, index: dict[str, int], loc: str) -> int:
    if key not in row:
        raise DataError(f"{loc}: missing field {key!r}")
    raw = row[key]
    value = raw if isinstance(raw, str) else json.dumps(raw)  # JSON true/false -> "true"/"false"
    if value not in index:
        raise DataError(f"{loc}: unknown label {raw!r} in {key!r}; expected one of {list(index)}")
    return index[value]


@functools.lru_cache(maxsize=32)
def _parse(file: LocalFile, path: str, mtime_ns: int, size: int) -> tuple[Example, ...]:
    """Parsed once per process while the file is unchanged (SST-2 train alone is 67k rows)."""
    index = {value: i for i, value in enumerate(file.label_values)}
    return tuple(
        Example(
            text=_text(row, file.text, loc),
            text_pair=_text(row, file.text_pair, loc) if file.text_pair else None,
            label=_label(row, file.label, index, loc),
            source=loc,
        )
        for loc, row in _read(file, Path(path))
    )


# ---------------------------------------------------------------- hub


@dataclass(frozen=True)
class HubSplit:
    """One split of a Hugging Face dataset whose `label` column already uses the task's label order."""

    dataset: str
    config: str | None
    split: str
    text: str
    text_pair: str | None = None

    @property
    def desc(self) -> str:
        return f"hf:{self.dataset}" + (f"/{self.config}" if self.config else "") + f":{self.split}"

    def __call__(self) -> list[Example]:
        try:
            from datasets import load_dataset
        except ImportError as e:
            raise DataError(
                f"{self.desc}: loading from the Hugging Face hub needs the `datasets` package: "
                "pip install datasets (or softprompt[hub]), or pass --data-dir with local files"
            ) from e
        rows = load_dataset(self.dataset, self.config, split=self.split)
        return [
            Example(
                text=row[self.text].strip(),
                text_pair=row[self.text_pair].strip() if self.text_pair else None,
                label=int(row["label"]),
                source=f"{self.desc}:{i}",
            )
            for i, row in enumerate(rows)
            if row["label"] >= 0  # -1 marks rows without a gold label (SNLI, GLUE test sets)
        ]


# ---------------------------------------------------------------- splits and carves

Pool = Callable[..., list[Example]]  # LocalFile (called with the data dir) or HubSplit (called with nothing)


@dataclass(frozen=True)
class Source:
    """Where each split comes from: `splits` maps split -> pool name, `pools` maps pool name -> loader.

    `carve` maps held-out split -> size. These splits are cut, in order and seeded, from the pool that "train"
    names; what is left of that pool is train. Splits that share a pool must come from such a carve.
    """

    pools: dict[str, Pool]
    splits: dict[str, str]
    carve: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split, pool in self.splits.items():
            if split != "train" and pool == self.splits["train"] and split not in self.carve:
                raise ValueError(f"split {split!r} shares the train pool {pool!r} but is not carved from it")


def dev_as_test(train: Pool, dev: Pool, n_validation: int) -> Source:
    """Test is the labelled dev set (GLUE-style test sets have no labels); validation is carved from train."""
    return Source({"train": train, "dev": dev}, {"train": "train", "validation": "train", "test": "dev"},
                  {"validation": n_validation})  # fmt: skip


def one_pool(pool: Pool, n_test: int, n_validation: int) -> Source:
    """All three splits carved from one pool: test first, then validation; the rest is train."""
    return Source({"all": pool}, {"train": "all", "validation": "all", "test": "all"},
                  {"test": n_test, "validation": n_validation})  # fmt: skip


def own_splits(make: Callable[[str], Pool], validation: str = "validation") -> Source:
    """The source already has labelled train/validation/test splits."""
    pools = {"train": make("train"), "validation": make(validation), "test": make("test")}
    return Source(pools, {s: s for s in pools})


def _load(source: Source, split: str, seed: int, sizes: dict[str, int], *root: Path) -> list[Example]:
    pool = source.splits[split]
    examples = source.pools[pool](*root)
    if source.carve and pool == source.splits["train"]:
        examples = carve(examples, source.carve, seed)[split]
    sizes[split] = len(examples)  # recorded in split_info, so artifacts say what was actually used
    return examples


def _describe(source: Source, seed: int) -> dict[str, Any]:
    desc = {name: getattr(pool, "desc", None) or repr(pool) for name, pool in source.pools.items()}
    info: dict[str, Any] = {"splits": {split: desc[pool] for split, pool in source.splits.items()}}
    if source.carve:
        info["carve"] = {"from": desc[source.splits["train"]], "held_out": dict(source.carve), "seed": seed}
    info["sizes"] = {}
    return info


def _task(
    name: str,
    template: str,
    verbalizer: dict[str, str],
    local: Source,
    hub: Source,
    seed: int,
    metrics: tuple[str, ...] = ("accuracy",),
    notes: str | None = None,
) -> Task:
    """A Task whose loaders read `local` (data dir) or `hub`; `verbalizer` maps label name -> word, in label order."""
    info: dict[str, Any] = {"seed": seed, "local": _describe(local, seed), "hub": _describe(hub, seed)}
    if notes:
        info["notes"] = notes
    return Task(
        name=name,
        template=template,
        labels=tuple(verbalizer),
        verbalizer=tuple(verbalizer.values()),
        metrics=metrics,
        loaders={s: functools.partial(_load, local, s, seed, info["local"]["sizes"]) for s in local.splits},
        hub_loaders={s: functools.partial(_load, hub, s, seed, info["hub"]["sizes"]) for s in hub.splits},
        split_info=info,
    )


def _hub(dataset: str, config: str | None, text: str, text_pair: str | None = None) -> Callable[[str], HubSplit]:
    return functools.partial(HubSplit, dataset, config, text=text, text_pair=text_pair)  # split given later


# ---------------------------------------------------------------- the tasks

# Templates are chosen by measurement: bench/templates.py scores candidates zero-shot on each task's validation split
# (bench/results/templates.md); a default changes only when a candidate wins by more than one point.
PLAIN_SENTIMENT = "Review: {text}\nSentiment:"  # sst2 81.7, yelp 86 vs 76.0, 74 with "(positive or negative)"
YES_NO_NLI = "{text}\nQuestion: {text_pair} True or false? Answer (yes or no):"
THREE_WAY_NLI = (
    "Premise: {text}\nHypothesis: {text_pair}\nDoes the premise entail the hypothesis? Answer (Yes, Maybe, or No):"
)


def sst2(seed: int = DEFAULT_SEED) -> Task:
    file = functools.partial(LocalFile, text="sentence", label="label", label_values=("0", "1"))
    hub = _hub("nyu-mll/glue", "sst2", "sentence")
    return _task(
        "sst2", PLAIN_SENTIMENT, {"negative": " negative", "positive": " positive"},
        local=dev_as_test(file("glue/SST-2/train.tsv"), file("glue/SST-2/dev.tsv"), 872),
        hub=dev_as_test(hub("train"), hub("validation"), 872),
        seed=seed,
    )  # fmt: skip


def rte(seed: int = DEFAULT_SEED) -> Task:
    verbalizer = {"entailment": " yes", "not_entailment": " no"}
    file = functools.partial(LocalFile, text="sentence1", text_pair="sentence2", label="label",
                             label_values=tuple(verbalizer))  # fmt: skip
    hub = _hub("nyu-mll/glue", "rte", "sentence1", "sentence2")
    return _task(
        "rte", YES_NO_NLI, verbalizer,
        local=dev_as_test(file("glue/RTE/train.tsv"), file("glue/RTE/dev.tsv"), 277),
        hub=dev_as_test(hub("train"), hub("validation"), 277),
        seed=seed,
    )  # fmt: skip


def mrpc(seed: int = DEFAULT_SEED) -> Task:
    file = functools.partial(LocalFile, text="#1 String", text_pair="#2 String", label="Quality",
                             label_values=("0", "1"))  # fmt: skip
    return _task(
        "mrpc",
        # By measurement (bench/results/templates.md): F1 0.551 vs 0.0 for the original "Sentence 1: ..." template.
        "{text}\n{text_pair}\nAre these two sentences paraphrases of each other? Answer (yes or no):",
        {"not_equivalent": " no", "equivalent": " yes"},
        # GLUE's dev ids are not in the MSR files: a seeded carve of the same size stands in for GLUE dev.
        local=dev_as_test(file("mrpc/msr_paraphrase_train.txt"), file("mrpc/msr_paraphrase_test.txt"), 408),
        hub=own_splits(_hub("SetFit/mrpc", None, "text1", "text2")),
        metrics=("f1", "accuracy"),
        seed=seed,
    )  # fmt: skip


def cola(seed: int = DEFAULT_SEED) -> Task:
    file = functools.partial(LocalFile, text="sentence", label="label", label_values=("0", "1"),
                             columns=("source", "label", "mark", "sentence"))  # fmt: skip
    hub = _hub("nyu-mll/glue", "cola", "sentence")
    return _task(
        # By measurement (bench/results/templates.md): MCC 0.143 vs -0.062 for the original "Sentence: ..." template.
        "cola", "{text}\nQuestion: Is this a grammatical English sentence? Answer (yes or no):",
        {"unacceptable": " no", "acceptable": " yes"},
        local=dev_as_test(file("glue/CoLA/train.tsv"), file("glue/CoLA/dev.tsv"), 1043),
        hub=dev_as_test(hub("train"), hub("validation"), 1043),
        metrics=("matthews_corrcoef", "accuracy"),
        seed=seed,
    )  # fmt: skip


def qnli(seed: int = DEFAULT_SEED) -> Task:
    verbalizer = {"entailment": " yes", "not_entailment": " no"}
    file = LocalFile("glue/QNLI/dev.tsv", text="question", text_pair="sentence", label="label",
                     label_values=tuple(verbalizer))  # fmt: skip
    return _task(
        "qnli",
        "Question: {text}\nSentence: {text_pair}\nDoes the sentence answer the question? Answer (yes or no):",
        verbalizer,
        # Only GLUE dev is available locally: every split is carved from it (from the same split on the hub).
        local=one_pool(file, n_test=2000, n_validation=500),
        hub=one_pool(_hub("nyu-mll/glue", "qnli", "question", "sentence")("validation"), 2000, 500),
        seed=seed,
    )  # fmt: skip


def boolq(seed: int = DEFAULT_SEED) -> Task:
    file = LocalFile("superglue/BoolQ/val.jsonl", fmt="jsonl", text="passage", text_pair="question", label="label",
                     label_values=("false", "true"))  # fmt: skip
    return _task(
        "boolq", "{text}\nQuestion: {text_pair}?\nAnswer:", {"false": " no", "true": " yes"},  # 42 vs 39 (templates.md)
        # Only SuperGLUE val is available locally: every split is carved from it (from the same split on the hub).
        local=one_pool(file, n_test=1000, n_validation=500),
        hub=one_pool(_hub("aps/super_glue", "boolq", "passage", "question")("validation"), 1000, 500),
        seed=seed,
    )  # fmt: skip


def cb(seed: int = DEFAULT_SEED) -> Task:
    verbalizer = {"entailment": " yes", "contradiction": " no", "neutral": " maybe"}
    file = functools.partial(LocalFile, fmt="jsonl", text="premise", text_pair="hypothesis", label="label",
                             label_values=tuple(verbalizer))  # fmt: skip
    hub = _hub("aps/super_glue", "cb", "premise", "hypothesis")
    return _task(
        # By measurement (bench/results/templates.md): 55.4 vs 51.8 for the original "... True, false, or neither?"
        "cb", "Premise: {text}\nHypothesis: {text_pair}\nDoes the premise entail the hypothesis? "
        "Answer (yes, no, or maybe):", verbalizer,
        local=dev_as_test(file("superglue/CB/train.jsonl"), file("superglue/CB/val.jsonl"), 56),
        hub=dev_as_test(hub("train"), hub("validation"), 56),
        metrics=("accuracy", "macro_f1"),
        seed=seed,
    )  # fmt: skip


def agnews(seed: int = DEFAULT_SEED) -> Task:
    # Official AG class ids 1-4 in both files.
    file = functools.partial(LocalFile, fmt="csv", text="Description", label="Class Index",
                             label_values=("1", "2", "3", "4"))  # fmt: skip
    hub = _hub("fancyzhx/ag_news", None, "text")
    return _task(
        "agnews", "Article: {text}\nTopic:",  # 71 vs 35 with the topics listed (bench/results/templates.md)
        {"World": " World", "Sports": " Sports", "Business": " Business", "Sci/Tech": " Tech"},
        local=dev_as_test(file("agnews/train_pool_from_dhim_val.csv"), file("agnews/test.csv"), 1000),
        hub=dev_as_test(hub("train"), hub("test"), 1000),
        notes="local texts are descriptions only (the train pool has no titles); hub texts are title + description",
        seed=seed,
    )  # fmt: skip


# DBpedia labels in the official order (dbpedia/classes.txt, = the hub's label ids) with their words. The DHIM
# subsets number the classes differently (dbpedia/dhim_meta.txt): DHIM_IDS maps each label to its DHIM id.
DBPEDIA = {
    "Company": " company", "EducationalInstitution": " school", "Artist": " artist", "Athlete": " athlete",
    "OfficeHolder": " politician", "MeanOfTransportation": " vehicle", "Building": " building",
    "NaturalPlace": " nature", "Village": " village", "Animal": " animal", "Plant": " plant", "Album": " album",
    "Film": " film", "WrittenWork": " book",
}  # fmt: skip
DHIM_IDS = {
    "Artist": "1", "Company": "2", "OfficeHolder": "3", "Building": "4", "Village": "5", "Plant": "6",
    "EducationalInstitution": "7", "Animal": "8", "Album": "9", "WrittenWork": "10", "NaturalPlace": "11",
    "MeanOfTransportation": "12", "Athlete": "13", "Film": "14",
}  # fmt: skip


def dbpedia(seed: int = DEFAULT_SEED) -> Task:
    file = functools.partial(LocalFile, fmt="csv", columns=("label", "text"), text="text", label="label",
                             label_values=tuple(DHIM_IDS[name] for name in DBPEDIA))  # fmt: skip
    hub = _hub("fancyzhx/dbpedia_14", None, "content")
    return _task(
        "dbpedia", "Article: {text}\nCategory:", DBPEDIA,  # 73 vs 35 with the 14 words listed (templates.md)
        local=dev_as_test(file("dbpedia/dhim_val_subset5000.csv"), file("dbpedia/dhim_test_subset5000.csv"), 1000),
        hub=dev_as_test(hub("train"), hub("test"), 1000),
        seed=seed,
    )  # fmt: skip


def _nli_sample(name: str, path: str, hub: Source, seed: int) -> Task:
    """SNLI/MNLI: locally a 1,000-row TextFooler sample is all there is, so every split is carved from it."""
    verbalizer = {"entailment": " Yes", "neutral": " Maybe", "contradiction": " No"}
    file = LocalFile(path, columns=("label", "premise", "hypothesis"), text="premise", text_pair="hypothesis",
                     label="label", label_values=tuple(verbalizer))  # fmt: skip
    return _task(name, THREE_WAY_NLI, verbalizer, local=one_pool(file, 500, 100), hub=hub, seed=seed)


def snli(seed: int = DEFAULT_SEED) -> Task:
    hub = own_splits(_hub("stanfordnlp/snli", None, "premise", "hypothesis"))
    return _nli_sample("snli", "snli/textfooler_test1000.tsv", hub, seed)


def mnli(seed: int = DEFAULT_SEED) -> Task:
    hub = _hub("nyu-mll/glue", "mnli", "premise", "hypothesis")
    return _nli_sample("mnli", "mnli/textfooler_matched1000.tsv",
                       dev_as_test(hub("train"), hub("validation_matched"), 1000), seed)  # fmt: skip


def yelp(seed: int = DEFAULT_SEED) -> Task:
    file = LocalFile("yelp_polarity/textfooler_test1000.txt", fmt="label-text", text="text", label="label",
                     label_values=("0", "1"))  # fmt: skip
    hub = _hub("fancyzhx/yelp_polarity", None, "text")
    return _task(
        "yelp", PLAIN_SENTIMENT, {"negative": " negative", "positive": " positive"},
        # Locally a 1,000-row TextFooler sample is all there is, so every split is carved from it.
        local=one_pool(file, n_test=500, n_validation=100),
        hub=dev_as_test(hub("train"), hub("test"), 1000),
        seed=seed,
    )  # fmt: skip


def local_files(task: Task, splits: Iterable[str]) -> list[str]:
    """The files under a data dir that a built-in task reads for `splits`, relative to it (its `split_info` names
    each split's file: a carved split names the pool it is carved from)."""
    named = task.split_info["local"]["splits"]
    return list(dict.fromkeys(named[split] for split in splits if split in named))


# ---------------------------------------------------------------- registry

TASKS: dict[str, Callable[..., Task]] = {
    f.__name__: f for f in (sst2, rte, mrpc, cola, qnli, boolq, cb, agnews, dbpedia, snli, mnli, yelp)
}
ALIASES = {
    "sst_2": "sst2",
    "ag_news": "agnews",
    "dbpedia_14": "dbpedia",
    "yelp_polarity": "yelp",
    "multinli": "mnli",
    "multi_nli": "mnli",
}


def list_tasks() -> list[str]:
    return sorted(TASKS)


def get_task(name: str, seed: int = DEFAULT_SEED) -> Task:
    """A fresh built-in task by name (case-insensitive; "SST-2", "ag_news" ... work). `seed` drives every carve."""
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; built-in tasks: {', '.join(list_tasks())}")
    return TASKS[key](seed)
