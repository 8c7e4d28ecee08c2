"""Cross-modal retrieval and zero-shot metrics in the shared space.

Shapes: q = queries, c = candidates, e = embed size, k = labels.
"""

from __future__ import annotations

import torch

from purrsight.vocabulary import MEDIA_MODALITIES


def recall_at_k(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    targets: torch.Tensor,
    ks: tuple[int, ...] = (1, 5),
) -> dict[int, float]:
    """Fraction of queries whose target candidate ranks within the top k.

    Args:
        queries: [q, e] unit vectors.
        candidates: [c, e] unit vectors.
        targets: [q] index of each query's correct candidate.
    Returns:
        {k: recall}. The rank is the number of candidates scored strictly higher than
        the target, so exact ties (duplicate candidates) never count against it.
    """
    scores = queries @ candidates.t()
    target_scores = scores.gather(1, targets.view(-1, 1))
    ranks = (scores > target_scores).sum(dim=1)
    return {k: float((ranks < k).float().mean()) for k in ks}


def unique_texts(texts: list[str]) -> tuple[list[str], torch.Tensor]:
    """Deduplicate captions: (unique texts in first-seen order, [n] index of each).

    Retrieval against texts ranks unique captions, because two samples that share a
    caption make either one a correct answer; chance is then 1 / len(unique).
    """
    order: dict[str, int] = {}
    index = [order.setdefault(t, len(order)) for t in texts]
    return list(order), torch.tensor(index, dtype=torch.long)


def zero_shot_accuracy(
    embeds: torch.Tensor, label_embeds: torch.Tensor, labels: torch.Tensor
) -> float:
    """Accuracy of choosing the nearest label description.

    Args:
        embeds: [n, e] unit vectors of the samples.
        label_embeds: [k, e] unit vectors of the label descriptions.
        labels: [n] true label index.
    """
    predicted = (embeds @ label_embeds.t()).argmax(dim=1)
    return float((predicted == labels).float().mean())


def alignment_metrics(
    embeds: dict[str, torch.Tensor],
    present: dict[str, torch.Tensor],
    texts: list[str],
    labels: torch.Tensor | None = None,
    label_embeds: torch.Tensor | None = None,
) -> dict[str, float]:
    """Retrieval R@1/R@5 and zero-shot accuracy on one split.

    Args:
        embeds: {modality: [n, e]} unit vectors; rows where a modality is absent are ignored.
        present: {modality: [n] bool}.
        texts: [n] captions (the text side of each sample).
        labels: [n] label index, -1 where unknown.
        label_embeds: [k, e] unit vectors of the label descriptions.
    Returns:
        ``i2t_r1``, ``i2t_r5``, ``a2t_r1``, ``a2t_r5``, ``i2a_r1``, ``i2a_r5``,
        ``a2i_r1``, ``a2i_r5``, ``chance_r1`` (text retrieval), ``chance_r1_i2a``,
        ``zero_shot_acc`` (image and audio averaged), ``zero_shot_acc_image``,
        ``zero_shot_acc_audio``: whichever the data allow.
    """
    metrics: dict[str, float] = {}
    unique, text_index = unique_texts(texts)
    if "text" in embeds:
        first_rows = torch.tensor([texts.index(t) for t in unique])
        candidates = embeds["text"][first_rows]
        metrics["chance_r1"] = 1.0 / len(unique)
        for modality, short in (("image", "i2t"), ("audio", "a2t")):
            if modality in embeds and bool(present[modality].any()):
                rows = present[modality]
                recall = recall_at_k(embeds[modality][rows], candidates, text_index[rows])
                metrics[f"{short}_r1"], metrics[f"{short}_r5"] = recall[1], recall[5]
    if "image" in embeds and "audio" in embeds:
        both = present["image"] & present["audio"]
        if int(both.sum()) >= 2:
            img, aud = embeds["image"][both], embeds["audio"][both]
            targets = torch.arange(img.shape[0])
            i2a, a2i = recall_at_k(img, aud, targets), recall_at_k(aud, img, targets)
            metrics["i2a_r1"], metrics["i2a_r5"] = i2a[1], i2a[5]
            metrics["a2i_r1"], metrics["a2i_r5"] = a2i[1], a2i[5]
            metrics["chance_r1_i2a"] = 1.0 / img.shape[0]
    if labels is not None and label_embeds is not None:
        metrics.update(_zero_shot(embeds, present, labels, label_embeds))
    return metrics


def _zero_shot(
    embeds: dict[str, torch.Tensor],
    present: dict[str, torch.Tensor],
    labels: torch.Tensor,
    label_embeds: torch.Tensor,
) -> dict[str, float]:
    """Zero-shot accuracy per perceptual modality and over all their samples."""
    out: dict[str, float] = {}
    hits, total = 0.0, 0
    for modality in MEDIA_MODALITIES:
        if modality not in embeds:
            continue
        rows = present[modality] & (labels >= 0)
        if not bool(rows.any()):
            continue
        acc = zero_shot_accuracy(embeds[modality][rows], label_embeds, labels[rows])
        out[f"zero_shot_acc_{modality}"] = acc
        hits += acc * int(rows.sum())
        total += int(rows.sum())
    if total:
        out["zero_shot_acc"] = hits / total
    return out
