from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from dermasynth.metrics.classification import (
    classification_metrics,
    confusion_stack,
    metrics_from_confusion,
    rank_auc,
    stratified_resamples,
)

CLASSES = ["a", "b", "c"]
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 0, 1, 2])
Y_PROB = np.array(
    [
        [0.8, 0.1, 0.1],
        [0.6, 0.3, 0.1],
        [0.3, 0.6, 0.1],
        [0.5, 0.2, 0.3],
        [0.2, 0.7, 0.1],
        [0.4, 0.5, 0.1],
        [0.1, 0.2, 0.7],
        [0.3, 0.3, 0.4],
        [0.5, 0.1, 0.4],
        [0.9, 0.05, 0.05],
        [0.45, 0.35, 0.2],
        [0.2, 0.2, 0.6],
    ]
)


def test_point_estimates_agree_with_scikit_learn() -> None:
    m = classification_metrics(Y_TRUE, Y_PROB, CLASSES, bootstrap=0)
    pred = Y_PROB.argmax(1)
    assert m.accuracy == pytest.approx(accuracy_score(Y_TRUE, pred))
    assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(Y_TRUE, pred))
    assert m.macro_f1 == pytest.approx(f1_score(Y_TRUE, pred, average="macro"))
    assert m.auc == pytest.approx(roc_auc_score(Y_TRUE, Y_PROB, multi_class="ovr"))
    assert m.confusion_matrix == confusion_matrix(Y_TRUE, pred).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(Y_TRUE, pred)
    for i, name in enumerate(CLASSES):
        c = m.per_class[name]
        assert (c.precision, c.recall, c.f1, c.support) == pytest.approx((precision[i], recall[i], f1[i], support[i]))
        assert c.auc == pytest.approx(roc_auc_score(np.equal(Y_TRUE, i), Y_PROB[:, i]))
    assert m.ci == {} and m.per_class["a"].recall_ci is None


def test_majority_class_predictor_is_exposed() -> None:
    # the "always nv" model: high accuracy, balanced accuracy 1/K, and F1 0 for the classes it never predicts
    y_true = np.array([0] * 90 + [1] * 7 + [2] * 3)
    y_prob = np.tile([0.8, 0.1, 0.1], (100, 1))
    m = classification_metrics(y_true, y_prob, CLASSES, bootstrap=200)
    assert m.accuracy == pytest.approx(0.9)
    assert m.balanced_accuracy == pytest.approx(1 / 3) == balanced_accuracy_score(y_true, y_prob.argmax(1))
    assert m.per_class["c"].precision == 0 and m.per_class["c"].recall == 0
    assert m.macro_f1 == pytest.approx(f1_score(y_true, y_prob.argmax(1), average="macro", zero_division=0))


def test_absent_class_follows_scikit_learn_conventions() -> None:
    y_true = np.array([0, 0, 1, 1, 0])
    y_prob = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.8, 0.1, 0.1]])
    pred = y_prob.argmax(1)
    with pytest.warns(UserWarning):  # scikit-learn warns that a predicted class is absent from y_true
        expected_ba = balanced_accuracy_score(y_true, pred)
    m = classification_metrics(y_true, y_prob, CLASSES, bootstrap=50)
    assert m.balanced_accuracy == pytest.approx(expected_ba)
    assert m.macro_f1 == pytest.approx(f1_score(y_true, pred, average="macro", zero_division=0))
    assert m.per_class["c"].support == 0 and m.per_class["c"].auc is None and m.per_class["c"].recall_ci is None
    assert m.auc == pytest.approx(np.mean([roc_auc_score(y_true == k, y_prob[:, k]) for k in (0, 1)]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_intervals_contain_the_point_estimate(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.choice(4, size=300, p=[0.6, 0.25, 0.1, 0.05])
    y_prob = rng.dirichlet(np.ones(4), size=300)
    y_prob[np.arange(300), y_true] += rng.uniform(0, 0.8, size=300)
    y_prob /= y_prob.sum(1, keepdims=True)
    m = classification_metrics(y_true, y_prob, list("wxyz"), bootstrap=500, seed=seed)
    assert set(m.ci) == {"accuracy", "balanced_accuracy", "macro_f1", "auc"}
    for name in m.ci:
        value = getattr(m, name)
        assert m.ci[name].low <= value <= m.ci[name].high, name
        assert m.ci[name].high - m.ci[name].low < 0.3
    for c in m.per_class.values():
        assert c.recall_ci is not None and c.recall_ci.low <= c.recall <= c.recall_ci.high
    again = classification_metrics(y_true, y_prob, list("wxyz"), bootstrap=500, seed=seed)
    assert again == m


def test_rank_auc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 5, size=(6, 40)).astype(float)  # many ties
    labels = rng.random((6, 40)) < 0.3
    expected = [roc_auc_score(labels[i], scores[i]) for i in range(6)]
    assert rank_auc(scores, labels) == pytest.approx(expected)
    assert np.isnan(rank_auc(scores[:1], np.zeros((1, 40), dtype=bool))[0])


@pytest.mark.parametrize(
    ("y_true", "y_prob", "needle"),
    [
        ([], np.zeros((0, 3)), "non-empty"),
        ([0, 1], np.zeros((2, 2)), r"shape \(N, K\) = \(2, 3\)"),
        ([0, 3], np.zeros((2, 3)), r"must lie in 0..2"),
        ([0.5, 1.0], np.zeros((2, 3)), "integer class indices"),
        ([0, 1], np.array([[np.nan, 0, 0], [0, 1, 0]]), "NaN"),
    ],
)
def test_bad_inputs_are_refused(y_true: list[float], y_prob: np.ndarray, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        classification_metrics(np.asarray(y_true), y_prob, CLASSES)
    with pytest.raises(ValueError, match="bootstrap must be"):
        classification_metrics(Y_TRUE, Y_PROB, CLASSES, bootstrap=-1)


def test_metrics_from_confusion_agree_with_scikit_learn() -> None:
    pred = Y_PROB.argmax(1)
    cms = confusion_stack(Y_TRUE[None, :], pred[None, :], len(CLASSES))
    assert cms[0].tolist() == confusion_matrix(Y_TRUE, pred).tolist()
    values = metrics_from_confusion(cms)
    precision, recall, f1, _ = precision_recall_fscore_support(Y_TRUE, pred, zero_division=0)
    assert values["precision"][0] == pytest.approx(precision)
    assert values["recall"][0] == pytest.approx(recall)
    assert values["f1"][0] == pytest.approx(f1)
    assert values["macro_f1"][0] == pytest.approx(f1_score(Y_TRUE, pred, average="macro"))
    one_vs_rest = [accuracy_score(np.equal(Y_TRUE, c), np.equal(pred, c)) for c in range(len(CLASSES))]
    assert values["class_accuracy"][0] == pytest.approx(one_vs_rest)


def test_stratified_resamples_keep_every_class_support() -> None:
    idx = stratified_resamples(Y_TRUE, len(CLASSES), 50, np.random.default_rng(0))
    assert idx.shape == (50, Y_TRUE.size)
    for row in Y_TRUE[idx]:
        assert np.bincount(row, minlength=3).tolist() == np.bincount(Y_TRUE, minlength=3).tolist()
