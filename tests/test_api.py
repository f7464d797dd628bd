"""The Python API: tune → load → predict/evaluate, with a model object instead of a name."""

from dataclasses import replace

import pytest
from synthetic import learnable_backbone, synthetic_examples, synthetic_task

import softprompt as sp
from softprompt.tasks.base import Task
from softprompt.training.trainer import TrainConfig


def test_tune_load_predict_evaluate(tmp_path):
    backbone, task = learnable_backbone(), synthetic_task()
    splits = (synthetic_examples(32, 0), synthetic_examples(16, 1), synthetic_examples(16, 2))
    config = TrainConfig(steps=6, batch_size=4, lr=0.1, eval_every=3)
    result = sp.tune(task, out=tmp_path, method="ulpt", prompt_len=4, rank=2, model=backbone, train_config=config,
                     splits=splits, progress=False)  # fmt: skip
    tuned = sp.load(tmp_path, model=backbone)
    assert tuned.task.to_dict() == task.to_dict()
    assert tuned.evaluate(examples=splits[2]) == pytest.approx(result.test)
    (prediction,) = tuned.predict(["the film was great"])
    assert prediction.label in task.labels and sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="scores single texts; 1 input"):  # it used to drop the second text
        tuned.predict(["the film was great", ("a film", "a second text")])
    pairs = replace(tuned, task=Task("pairs", "{text} ? {text_pair} :", labels=task.labels,
                                     verbalizer=task.verbalizer))  # fmt: skip
    with pytest.raises(ValueError, match="scores sentence pairs; 1 input"):  # it used to score an empty second text
        pairs.predict([("a film", "a second text"), "the film was great"])
    assert len(pairs.predict([("a film", "a second text")])) == 1


def test_unknown_method_option_is_rejected_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="does not take"):
        sp.tune(synthetic_task(), out=tmp_path, method="prompt_tuning", rank=2, model=learnable_backbone())
