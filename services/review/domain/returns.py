"""What a return for documents asks for, as ids the window can record (pure).

A department names documents of the claim's checklist (critical ones too: it may need
one again) or, under ``other_documents``, titles of documents the checklist does not
name; each title gets an id ``other-N`` — the same id when the same title was asked for
before on the claim, so the window sees one document. Anything else is refused before
the enterprise is told to bring something nobody can record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shared.problems import Invalid

OTHER_DOCUMENT_PREFIX = "other-"


def checked_request(
    checklist: Sequence[str], documents: Sequence[str], other_documents: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(checklist ids asked for, once each; the titles, white space folded) or a refusal."""
    unknown = [d for d in documents if d not in checklist]
    if unknown:
        raise Invalid(
            f"not on the claim's checklist: {', '.join(map(repr, unknown))}; name a checklist "
            f"document ({', '.join(checklist)}) or ask for it under other_documents with a "
            "title",
            field="documents",
            rule="unknown_document",
        )
    titles = [" ".join(t.split()) for t in other_documents]
    if any(not t for t in titles):
        raise Invalid(
            "an other document needs a title", field="other_documents", rule="title_required"
        )
    return list(dict.fromkeys(documents)), titles


def number_other_documents(
    asked: Sequence[str], titles: Sequence[str], earlier: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """``asked`` followed by one ``other-N`` id per title, and those ids' titles.

    ``earlier``: the ``other-N`` ids and titles asked for before on this claim."""
    out_ids = list(asked)
    by_title = {title: doc for doc, title in earlier.items()}
    numbers = [int(d.removeprefix(OTHER_DOCUMENT_PREFIX)) for d in earlier]
    next_no = max(numbers, default=0) + 1
    out: dict[str, str] = {}
    for title in dict.fromkeys(titles):
        doc = by_title.get(title)  # asked again: the same id, so the window sees one
        if doc is None:
            doc, next_no = f"{OTHER_DOCUMENT_PREFIX}{next_no}", next_no + 1
        out[doc] = title
        out_ids.append(doc)
    return out_ids, out
