"""Evaluate generated reports: per-finding P/R/F1 (bootstrap CIs), macro averages, BLEU, ROUGE-L.

Findings are extracted with the same extractor from reference and generated text (docs/original.md §5.4).
Macro averages run over the findings that occur in at least one reference report of the evaluated
set (a finding absent from every reference has no defined recall; it is listed under
``findings_without_support`` with its false positives still counted per finding). CIs are
percentile bootstraps over scans (1000 resamples, seed 4 as in the original ``combine.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voxelfm.core.errors import DataError, located
from voxelfm.report.findings import FindingExtractor, FindingVocabulary, RuleBasedExtractor

if TYPE_CHECKING:
    from voxelfm.metrics import DifferenceCI


def label_matrix(texts: Sequence[str], extractor: FindingExtractor) -> np.ndarray:
    """(N, K) boolean matrix of extracted findings, columns in vocabulary order."""
    names = extractor.vocabulary.names
    return np.array([[extractor.extract(t)[n] for n in names] for t in texts], dtype=bool).reshape(
        len(texts), len(names))


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return precision, recall, f1


def _counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, ...]:
    tp = (y_true & y_pred).sum(0).astype(float)
    fp = (~y_true & y_pred).sum(0).astype(float)
    fn = (y_true & ~y_pred).sum(0).astype(float)
    tn = (~y_true & ~y_pred).sum(0).astype(float)
    return tp, fp, fn, tn


def finding_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str], *,
                    n_bootstrap: int = 1000, seed: int = 4, ci: float = 0.95) -> dict[str, Any]:
    """Per-finding TP/FP/FN/TN, precision, recall, F1 (+ bootstrap CI), accuracy, support; macro."""
    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    if y_true.shape != y_pred.shape or y_true.ndim != 2 or y_true.shape[1] != len(names):
        raise DataError(f"label matrices {y_true.shape} / {y_pred.shape} do not match {len(names)} findings")
    n = y_true.shape[0]
    if n == 0:
        raise DataError("no reports to evaluate")
    tp, fp, fn, tn = _counts(y_true, y_pred)
    precision, recall, f1 = _prf(tp, fp, fn)
    supported = y_true.sum(0) > 0
    rng = np.random.default_rng(seed)
    boot_f1 = np.zeros((n_bootstrap, len(names)))
    boot_macro = np.zeros((n_bootstrap, 3))
    for b in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        p_b, r_b, f_b = _prf(*_counts(y_true[idx], y_pred[idx])[:3])
        boot_f1[b] = f_b
        sup_b = supported & (y_true[idx].sum(0) > 0)
        if sup_b.any():
            boot_macro[b] = [p_b[sup_b].mean(), r_b[sup_b].mean(), f_b[sup_b].mean()]
        else:
            boot_macro[b] = np.nan
    lo_q, hi_q = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    per: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        lo, hi = np.nanpercentile(boot_f1[:, k], [lo_q, hi_q]) if n_bootstrap else (np.nan, np.nan)
        per[name] = {
            "tp": int(tp[k]), "fp": int(fp[k]), "fn": int(fn[k]), "tn": int(tn[k]),
            "support": int(tp[k] + fn[k]), "predicted": int(tp[k] + fp[k]),
            "precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
            "f1_ci": [float(lo), float(hi)], "accuracy": float((tp[k] + tn[k]) / n),
            "chance_f1": chance_f1(int(tp[k] + fn[k]), int(tp[k] + fp[k]), n),
        }
    macro: dict[str, Any] = {"n_findings": int(supported.sum())}
    for j, key in enumerate(("precision", "recall", "f1")):
        vals = {"precision": precision, "recall": recall, "f1": f1}[key]
        macro[key] = float(vals[supported].mean()) if supported.any() else float("nan")
        col = boot_macro[:, j]
        col = col[np.isfinite(col)]
        macro[f"{key}_ci"] = ([float(v) for v in np.percentile(col, [lo_q, hi_q])]
                              if col.size else [float("nan")] * 2)
    return {"n_reports": n, "per_finding": per, "macro": macro,
            "findings_without_support": [nm for nm, s in zip(names, supported, strict=True) if not s],
            "bootstrap": {"n": n_bootstrap, "seed": seed, "ci": ci}}


def macro_f1_difference(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, names: Sequence[str], *,
                        n_resamples: int = 1000, seed: int = 4) -> DifferenceCI:
    """Macro finding F1 of ``pred_a`` minus that of ``pred_b`` on the same reports (label matrices,
    rows the same scans), with a paired bootstrap CI and p-value over the scans."""
    from voxelfm.metrics import paired_bootstrap

    def macro_f1(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        return {"f1": finding_metrics(truth, pred, names, n_bootstrap=0)["macro"]["f1"]}

    return paired_bootstrap(macro_f1, [y_true, pred_a], [y_true, pred_b], n_resamples=n_resamples, seed=seed)["f1"]


def text_metrics(generated: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU (sacrebleu, 0–100) and mean ROUGE-L F-measure (rouge-score, 0–1)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    bleu = sacrebleu.corpus_bleu(list(generated), [list(references)])
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [scorer.score(r, g)["rougeL"].fmeasure for g, r in zip(generated, references, strict=True)]
    return {"bleu": float(bleu.score), "rouge_l": float(np.mean(rouge)) if rouge else float("nan")}


def _words(text: str) -> list[str]:
    import re

    return re.findall(r"[a-z0-9]+(?:[-'][a-z0-9]+)*", text.lower())


def _sentences(text: str) -> list[str]:
    import re

    return [" ".join(_words(s)) for s in re.split(r"(?<=[.!?])\s+|\n+", text) if _words(s)]


def language_check(generated: Sequence[str], train_references: Sequence[str]) -> dict[str, float]:
    """Does generated text use the references' language? Shares over the generated reports.

    * ``known_words``: share of generated words that occur in some training reference;
    * ``known_sentences``: share of generated sentences that occur verbatim (case and punctuation
      aside) in some training reference;
    * ``all_known``: share of reports all of whose sentences are known;
    * ``empty``: share of empty reports.
    """
    vocab = {w for t in train_references for w in _words(t)}
    known = {s for t in train_references for s in _sentences(t)}
    words = [w for t in generated for w in _words(t)]
    sentences = [_sentences(t) for t in generated]
    flat = [x for ss in sentences for x in ss]
    n = max(len(generated), 1)
    return {
        "known_words": float(np.mean([w in vocab for w in words])) if words else 0.0,
        "known_sentences": float(np.mean([x in known for x in flat])) if flat else 0.0,
        "all_known": float(sum(1 for ss in sentences if ss and all(x in known for x in ss)) / n),
        "empty": float(sum(1 for ss in sentences if not ss) / n),
    }


def distinct_reports(generated: Sequence[str]) -> dict[str, int]:
    """How many different texts the model wrote (case and spacing aside): one for every scan means
    the text did not depend on the image."""
    return {"distinct": len({" ".join(t.lower().split()) for t in generated}), "n": len(generated)}


def chance_f1(support: int, predicted: int, n: int) -> float:
    """Expected F1 of naming a finding in ``predicted`` of ``n`` reports chosen at random, when
    ``support`` of them have it: 2pq / (p + q) with p = support/n, q = predicted/n. A report model
    beats it on a finding only if *which* reports name the finding follows the images."""
    p, q = support / max(n, 1), predicted / max(n, 1)
    return 2 * p * q / (p + q) if p + q > 0 else 0.0


def detected_by_probes(probe_metrics: Sequence[Mapping[str, Any] | str | os.PathLike[str]],
                       level: float = 0.5) -> list[str]:
    """Findings some probe detects: a ``"<finding>/auroc"`` entry whose 95 % CI lies above ``level``,
    in any of ``probe_metrics`` (probe runs' metrics, or their ``metrics.json`` paths; a missing file
    is skipped), in first-seen order."""
    found: dict[str, None] = {}
    for entry in probe_metrics:
        if not isinstance(entry, Mapping) and not Path(entry).is_file():
            continue
        metrics = entry if isinstance(entry, Mapping) else json.loads(Path(entry).read_text())
        for key, value in metrics.items():
            name, _, metric = key.rpartition("/")
            if metric == "auroc" and name != "macro" and isinstance(value, Mapping) and value.get("ci_low", 0) > level:
                found.setdefault(name)
    return list(found)


def detected_findings_f1(metrics: Mapping[str, Any], findings: Sequence[str]) -> dict[str, Any] | None:
    """Mean finding F1 of an :func:`evaluate_reports` result over ``findings`` (those with support),
    beside the mean rate-matched chance F1 and the every-finding report's F1 on the same findings."""
    per, every = metrics["findings"]["per_finding"], metrics["baseline_every_finding"]["per_finding"]
    names = [f for f in findings if f in per and per[f]["support"] > 0]
    if not names:
        return None
    return {"findings": names, "f1": float(np.mean([per[f]["f1"] for f in names])),
            "chance_f1": float(np.mean([per[f]["chance_f1"] for f in names])),
            "every_finding_f1": float(np.mean([every[f]["f1"] for f in names]))}


def reading_notes(by_source: Mapping[str, Mapping[str, Any]],
                  detected: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """What the scores of several report models (each an :func:`evaluate_reports` result, by source
    name) cannot show: sources whose model wrote one text for every scan, the finding F1 a fixed
    report naming every finding gets without looking at any image, and (``detected``: the findings
    the probes detect on each source's features) how the reports do on the findings the features
    are known to carry, against chance at the same naming rate."""
    notes = []
    same = [name for name, m in by_source.items() if m.get("reports", {}).get("distinct") == 1]
    if len(same) == 1:
        notes.append(f"The report model of {same[0]} wrote the same text for every test scan: it did not use "
                     "the image, and its finding F1 is that of a fixed list of findings.")
    elif same:
        notes.append(f"The report models of {', '.join(same[:-1])} and {same[-1]} each wrote one text for every "
                     "test scan: they did not use the image, and their finding F1 is that of a fixed list of findings.")
    every = next((m["baseline_every_finding"]["macro"]["f1"] for m in by_source.values()
                  if "baseline_every_finding" in m), None)
    if every is not None:
        notes.append(f"A report naming every finding for every scan scores macro F1 {every:.3f} on these scans.")
    reliance = {name: m["image_reliance"] for name, m in by_source.items() if "image_reliance" in m}
    if reliance:
        notes.append("Loss of each test reference with its own image against another scan's (lower with its own "
                      "image means the model reads the image): " + "; ".join(
                          f"{name} {r['own']:.3f} vs {r['shuffled']:.3f}, own image better for {r['own_better']:.0%}"
                          for name, r in reliance.items()) + ".")
    parts = []
    for name, metrics in by_source.items():
        summary = detected_findings_f1(metrics, (detected or {}).get(name, ()))
        if summary is not None:
            parts.append(f"{name} {summary['f1']:.3f} against {summary['chance_f1']:.3f} by chance "
                         f"({', '.join(f.replace('_', ' ') for f in summary['findings'])})")
    if parts:
        notes.append("On the findings the probes detect on each source's features (AUROC CI above 0.5), the "
                      "reports' mean F1 against naming them as often at random: " + "; ".join(parts) + ".")
    return notes


def majority_labels(train_texts: Sequence[str], n: int, extractor: FindingExtractor) -> np.ndarray:
    """Majority-class baseline: each finding predicted present iff > 50 % of training reports have it."""
    train = label_matrix(train_texts, extractor)
    majority = train.mean(0) > 0.5 if len(train) else np.zeros(len(extractor.vocabulary.names), bool)
    return np.tile(majority, (n, 1))


def prevalence_labels(train_texts: Sequence[str], n: int, extractor: FindingExtractor,
                      seed: int = 0) -> np.ndarray:
    """Chance baseline: each finding drawn present with its training prevalence (seeded)."""
    train = label_matrix(train_texts, extractor)
    prevalence = train.mean(0) if len(train) else np.zeros(len(extractor.vocabulary.names))
    return np.random.default_rng(seed).random((n, prevalence.shape[0])) < prevalence


def evaluate_reports(
    generated: Mapping[str, str],
    references: Mapping[str, str],
    *,
    extractor: FindingExtractor | None = None,
    vocabulary: FindingVocabulary | None = None,
    train_references: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 4,
) -> dict[str, Any]:
    """Score generated against reference reports (matched by scan id).

    ``reports`` counts the distinct generated texts; ``baseline_every_finding`` scores a report that
    names every finding for every scan. With ``train_references`` two baselines from the training
    reports are scored on the same scans: ``baseline_majority`` (each finding's majority class) and
    ``baseline_prevalence`` (each finding drawn at random with its training prevalence).
    """
    ids = [s for s in generated if s in references]
    missing = sorted(set(generated) - set(references))
    if missing:
        raise DataError(located(missing[0], f"{len(missing)} generated report(s) without reference"))
    if not ids:
        raise DataError("no generated reports to evaluate")
    if extractor is None:
        extractor = RuleBasedExtractor(vocabulary or FindingVocabulary.ct_rate())
    names = extractor.vocabulary.names
    gen_texts = [generated[s] for s in ids]
    ref_texts = [references[s] for s in ids]
    y_true = label_matrix(ref_texts, extractor)
    y_pred = label_matrix(gen_texts, extractor)
    result: dict[str, Any] = {
        "findings": finding_metrics(y_true, y_pred, names, n_bootstrap=n_bootstrap, seed=seed),
        "text": text_metrics(gen_texts, ref_texts),
        "reports": distinct_reports(gen_texts),
        # a report naming every finding, the same for every scan: what a text that ignores the image
        # can score on finding F1 by recall alone
        "baseline_every_finding": finding_metrics(y_true, np.ones_like(y_true), names,
                                                  n_bootstrap=n_bootstrap, seed=seed),
        "extractor": type(extractor).__name__,
        "vocabulary": names,
        "scan_ids": ids,
    }
    if train_references is not None:
        result["language"] = language_check(gen_texts, train_references)
        base = majority_labels(train_references, len(ids), extractor)
        result["baseline_majority"] = finding_metrics(y_true, base, names,
                                                      n_bootstrap=n_bootstrap, seed=seed)
        chance = prevalence_labels(train_references, len(ids), extractor, seed=seed)
        result["baseline_prevalence"] = finding_metrics(y_true, chance, names,
                                                        n_bootstrap=n_bootstrap, seed=seed)
    return result


def plot_finding_f1(metrics: dict[str, Any], path: str | os.PathLike[str],
                    probe_f1: Mapping[str, float] | None = None) -> Path:
    """Bar chart of per-finding F1 with CIs (+ majority baseline and probe F1 if given; paper Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = metrics["findings"]["per_finding"]
    names = [n for n in per if per[n]["support"] > 0] or list(per)
    f1 = np.array([per[n]["f1"] for n in names])
    ci = np.array([per[n]["f1_ci"] for n in names])
    err = np.abs(np.stack([f1 - ci[:, 0], ci[:, 1] - f1]))
    series = [("report generation", f1, err)]
    if "baseline_majority" in metrics:
        bp = metrics["baseline_majority"]["per_finding"]
        series.append(("majority baseline", np.array([bp[n]["f1"] for n in names]), None))
    if "baseline_prevalence" in metrics:
        bp = metrics["baseline_prevalence"]["per_finding"]
        series.append(("chance (prevalence)", np.array([bp[n]["f1"] for n in names]), None))
    if probe_f1:
        series.append(("classification probe", np.array([probe_f1.get(n, np.nan) for n in names]), None))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 4))
    x = np.arange(len(names))
    for i, (label, vals, e) in enumerate(series):
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, yerr=e, capsize=2, label=label)
    ax.set_xticks(x, [n.replace("_", " ") for n in names], rotation=45, ha="right")
    ax.set_ylabel("F1 (extracted findings)")
    ax.set_ylim(0, 1)
    macro = metrics["findings"]["macro"]
    ax.set_title(f"Report generation: macro F1 {macro['f1']:.3f} over {macro['n_findings']} findings")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def evaluate_run(run_dir: str | os.PathLike[str], *, generated_name: str = "generated",
                 vocabulary: FindingVocabulary | None = None, n_bootstrap: int = 1000,
                 probe_f1: Mapping[str, float] | None = None,
                 extractor: FindingExtractor | None = None) -> dict[str, Any]:
    """Evaluate ``RUN/<generated_name>.jsonl``; write ``RUN/metrics.json`` and ``RUN/findings_f1.png``.

    ``extractor`` defaults to the rule-based one over ``vocabulary`` (CT-RATE 18 by default).
    """
    from voxelfm.core.atomic import atomic_write_text
    from voxelfm.report.dataset import load_reports
    from voxelfm.report.generate import read_run_config

    run = Path(run_dir)
    gen_path = run / f"{generated_name}.jsonl"
    if not gen_path.is_file():
        raise DataError(located(gen_path, "no generated reports; run `voxelfm report generate` first"))
    generated = {}
    for line in gen_path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            generated[row["scan_id"]] = row["generated"]
    field = read_run_config(run)["train"].get("text_field", "report")
    refs = load_reports(run / "references.jsonl")
    references = {r.scan_id: r.text(field) for r in refs}
    train_texts = [r.text(field) for r in refs if r.split == "train"]
    metrics = evaluate_reports(generated, references, extractor=extractor, vocabulary=vocabulary,
                               train_references=train_texts, n_bootstrap=n_bootstrap)
    if hasattr(extractor, "n_unparsed"):
        metrics["extractor_unparsed_answers"] = int(extractor.n_unparsed)
    seconds = [json.loads(x)["seconds"] for x in gen_path.read_text().splitlines() if x.strip()]
    metrics["seconds_per_report"] = float(np.mean(seconds)) if seconds else None
    atomic_write_text(run / "metrics.json", json.dumps(metrics, indent=2))
    plot_finding_f1(metrics, run / "findings_f1.png", probe_f1=probe_f1)
    return metrics


def image_reliance(model: Any, features: Mapping[str, tuple[np.ndarray, np.ndarray]], references: Mapping[str, str],
                   ids: Sequence[str], *, seed: int = 0, max_tokens: int = 4096) -> dict[str, float]:
    """Does a trained :class:`~voxelfm.report.model.ReportModel` read the image? Each reference's
    loss with its own scan's features and with another scan's (a seeded derangement of ``ids``):
    ``gap`` = mean shuffled − mean own (≈ 0: the text does not depend on the image) and
    ``own_better`` = share of scans whose own image gives the lower loss."""
    import torch

    from voxelfm.report.dataset import vision_tokens

    ids = list(ids)
    if len(ids) < 2:
        raise DataError("image_reliance needs at least two scans")
    order = np.random.default_rng(seed).permutation(len(ids))
    other = {ids[order[i]]: ids[order[(i + 1) % len(ids)]] for i in range(len(ids))}  # nobody keeps their own
    tokens = {s: vision_tokens(*features[s], use_cls=model.use_cls, max_tokens=max_tokens) for s in ids}
    own, shuffled = [], []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for scan in ids:
            input_ids, labels = model.encode(references[scan])
            for source, losses in ((scan, own), (other[scan], shuffled)):
                losses.append(float(model.loss([tokens[source]], [input_ids], [labels])))
    model.train(was_training)
    own_a, shuffled_a = np.asarray(own), np.asarray(shuffled)
    return {"own": float(own_a.mean()), "shuffled": float(shuffled_a.mean()), "gap": float((shuffled_a - own_a).mean()),
            "own_better": float((own_a < shuffled_a).mean()), "n": len(ids)}
