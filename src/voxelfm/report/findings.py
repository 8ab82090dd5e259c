"""Finding extraction from report text: a rule-based extractor (synonyms + negation) and an LLM one.

Both extractors share one interface, ``extract(text) -> dict[finding, bool]`` over a configurable
:class:`FindingVocabulary` (the 18 CT-RATE abnormalities by default, snake_case names as in
``voxelfm.data.phantom.FINDINGS``). They are applied to reference and generated reports alike, as
in the original evaluation (which used an LLM on both sides).

Rule-based algorithm (NegEx-like):

1. Find every synonym mention in the lower-cased text; overlapping mentions keep the longest
   (so "pericardial effusion" wins over the bare "effusion" → pleural effusion).
2. A mention is *negated* when a negation cue ("no", "without", "no evidence of", "negative for",
   "free of", ...) precedes it within the same clause and at most ``window`` words away, or a
   post-negation cue ("has resolved", "is not seen", "is absent", ...) follows it closely.
   Clauses end at sentence punctuation and at scope terminators ("but", "however", "with", ...).
3. A finding is present when at least one of its mentions is not negated.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from voxelfm.core.errors import ConfigError, located
from voxelfm.core.readers import read_json, read_yaml

# The 18 CT-RATE abnormalities (order of the CT-RATE label table) with synonyms seen in reports.
CT_RATE_FINDINGS: dict[str, tuple[str, ...]] = {
    "medical_material": (
        "medical material", "pacemaker", "stent", "stents", "catheter", "port catheter",
        "surgical clip", "surgical clips", "sternotomy wire", "sternotomy wires", "prosthesis",
        "post-sternotomy", "median sternotomy",
        "prosthetic valve", "chest tube", "drain", "endotracheal tube", "implant",
    ),
    "arterial_wall_calcification": (
        "arterial wall calcification", "arterial wall calcifications", "arterial calcification",
        "aortic calcification", "aortic calcifications", "atherosclerotic calcification",
        "atherosclerotic calcifications", "atherosclerosis", "calcified atherosclerotic plaque",
        "calcified plaques", "vascular calcification", "vascular calcifications",
    ),
    "cardiomegaly": (
        "cardiomegaly", "enlarged heart", "heart is enlarged", "cardiac enlargement",
        "enlargement of the heart", "increased heart size", "heart size is increased",
        "cardiac silhouette is enlarged", "enlarged cardiac silhouette",
    ),
    "pericardial_effusion": (
        "pericardial effusion", "pericardial effusions", "pericardial fluid", "hydropericardium",
    ),
    "coronary_artery_wall_calcification": (
        "coronary artery wall calcification", "coronary artery calcification",
        "coronary artery calcifications", "coronary calcification", "coronary calcifications",
        "calcified coronary", "coronary atherosclerosis", "coronary artery calcium",
        "calcified plaques in the coronary arteries", "calcified plaque in the coronary arteries",
    ),
    "hiatal_hernia": ("hiatal hernia", "hiatus hernia", "hiatal herniation"),
    "lymphadenopathy": (
        "lymphadenopathy", "lymphadenopathies", "enlarged lymph node", "enlarged lymph nodes",
        "lymph node enlargement", "pathologically enlarged lymph nodes", "adenopathy",
        "enlarged mediastinal lymph nodes", "enlarged hilar lymph nodes",
        "enlarged mediastinal lymph node",
    ),
    "emphysema": ("emphysema", "emphysematous", "bullae", "bulla", "bullous"),
    "atelectasis": ("atelectasis", "atelectatic", "atelectases", "collapse of the"),
    "lung_nodule": (
        "lung nodule", "lung nodules", "pulmonary nodule", "pulmonary nodules", "nodule",
        "nodules", "nodular opacity", "nodular lesion", "pulmonary mass", "lung mass",
        # Nodule types, so that "ground-glass nodule" is not read as a ground-glass opacity.
        "solid nodule", "part-solid nodule", "ground-glass nodule", "ground glass nodule",
        "subsolid nodule",
    ),
    "lung_opacity": (
        "lung opacity", "lung opacities", "opacity", "opacities", "ground-glass opacity",
        "ground-glass opacities", "ground-glass opacification", "ground-glass density",
        "ground-glass densities", "ground glass opacity", "ground glass opacities",
        "ground-glass attenuation", "increased attenuation", "infiltrate", "infiltrates",
        "infiltration",
    ),
    "pulmonary_fibrotic_sequela": (
        "pulmonary fibrotic sequela", "fibrotic sequela", "fibrotic sequelae", "fibrosis",
        "fibrotic", "fibrotic changes", "fibrotic bands", "scarring", "parenchymal scar",
    ),
    "pleural_effusion": (
        "pleural effusion", "pleural effusions", "effusion", "effusions", "pleural fluid",
        "hydrothorax",
    ),
    "mosaic_attenuation_pattern": (
        "mosaic attenuation pattern", "mosaic attenuation", "mosaic pattern", "mosaic perfusion",
    ),
    "peribronchial_thickening": (
        "peribronchial thickening", "peribronchial wall thickening", "bronchial wall thickening",
        "peribronchial cuffing", "bronchial walls are thickened", "thickened bronchial walls",
    ),
    "consolidation": ("consolidation", "consolidations", "consolidated", "airspace disease"),
    "bronchiectasis": ("bronchiectasis", "bronchiectatic", "bronchiectases"),
    "interlobular_septal_thickening": (
        "interlobular septal thickening", "septal thickening", "thickened interlobular septa",
        "interlobular septal thickenings",
    ),
}

PRE_NEGATIONS: tuple[str, ...] = (
    "no", "not", "without", "absence of", "absent", "negative for", "free of", "no evidence of",
    "no signs of", "no sign of", "there is no", "there are no", "rules out", "ruled out",
    "resolution of", "resolved", "no longer", "neither", "nor", "none", "never", "excluded",
)
POST_NEGATIONS: tuple[str, ...] = (
    "has resolved", "have resolved", "resolved", "is resolved", "are resolved",
    "is not seen", "are not seen", "not seen", "was not seen", "were not seen",
    "is not present", "are not present", "not present", "is not identified", "not identified",
    "are not identified", "is absent", "are absent", "absent", "is not detected", "not detected",
    "was ruled out", "is ruled out", "has disappeared", "no longer seen", "no longer visible",
    "is excluded", "not demonstrated",
)
# Words that end the scope of a preceding negation within a sentence.
TERMINATORS: tuple[str, ...] = (
    "but", "however", "although", "though", "except", "apart from", "aside from", "whereas",
    "while", "yet", "with", "there is", "there are", "which", "showing", "shows", "demonstrates",
    "consistent with", "suggestive of", "compatible with",
)
# Size/severity/laterality words: after a comma they start a new, positive statement
# ("no effusion, small nodule in the right upper lobe"), not another item of a negated list.
DESCRIPTORS: tuple[str, ...] = (
    "small", "large", "mild", "mildly", "moderate", "severe", "minimal", "trace", "extensive",
    "multiple", "several", "few", "scattered", "bilateral", "right", "left", "right-sided",
    "left-sided", "focal", "diffuse", "subtle", "prominent", "stable", "persistent", "a", "an",
)

_SENTENCE_SPLIT = re.compile(r"(?<=[.;:!?\n])\s*|\s+-\s+")
_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def _phrase_regex(phrases: Iterable[str]) -> re.Pattern[str]:
    ordered = sorted({p.lower() for p in phrases}, key=len, reverse=True)
    body = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in ordered)
    return re.compile(rf"(?<![a-z0-9-])(?:{body})(?![a-z0-9-])")


@dataclass(frozen=True)
class FindingVocabulary:
    """Finding names (snake_case) and the phrases that mention each one."""

    synonyms: Mapping[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        if not self.synonyms:
            raise ConfigError("finding vocabulary is empty")
        for name, phrases in self.synonyms.items():
            if not phrases:
                raise ConfigError(located(name, "finding has no synonyms"))

    @property
    def names(self) -> list[str]:
        return list(self.synonyms)

    @classmethod
    def ct_rate(cls) -> FindingVocabulary:
        """The 18 CT-RATE abnormalities (the paper's report-generation vocabulary)."""
        return cls({k: tuple(v) for k, v in CT_RATE_FINDINGS.items()})

    def subset(self, names: Iterable[str]) -> FindingVocabulary:
        """Restrict to ``names``; unknown names get their own spelled-out name as synonym."""
        out: dict[str, tuple[str, ...]] = {}
        for name in names:
            out[name] = tuple(self.synonyms.get(name, (name.replace("_", " "),)))
        return FindingVocabulary(out)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> FindingVocabulary:
        """Load ``{"finding": ["synonym", ...], ...}`` from a JSON or YAML file."""
        p = Path(path)
        read = read_json if p.suffix == ".json" else read_yaml
        data = read(p, what="finding vocabulary", error=ConfigError, mapping=True)
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ConfigError(located(p, "vocabulary must map finding names to lists of synonyms"))
        return cls({str(k): tuple(str(s) for s in v) for k, v in data.items()})

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.synonyms.items()}


class FindingExtractor(Protocol):
    """Anything that maps a report text to present/absent per finding of its vocabulary."""

    vocabulary: FindingVocabulary

    def extract(self, text: str) -> dict[str, bool]: ...


@dataclass(frozen=True)
class Mention:
    """One synonym mention in a text, with whether it is negated."""

    finding: str
    phrase: str
    start: int
    end: int
    negated: bool


@dataclass
class RuleBasedExtractor:
    """Synonym matching with NegEx-style negation scopes; deterministic and fast."""

    vocabulary: FindingVocabulary = field(default_factory=FindingVocabulary.ct_rate)
    window: int = 8  # max words between a pre-negation cue and the mention
    post_window: int = 4  # max words between the mention and a post-negation cue

    def __post_init__(self) -> None:
        self._phrase_to_finding: dict[str, str] = {}
        for name, phrases in self.vocabulary.synonyms.items():
            for phrase in phrases:
                self._phrase_to_finding.setdefault(_normalise(phrase), name)
        self._mentions_re = _phrase_regex(self._phrase_to_finding)
        self._pre_re = _phrase_regex(PRE_NEGATIONS)
        self._post_re = _phrase_regex(POST_NEGATIONS)
        self._term_re = _phrase_regex(TERMINATORS)
        self._descriptor_re = _phrase_regex(DESCRIPTORS)

    def mentions(self, text: str) -> list[Mention]:
        """Every finding mention with its negation status, in reading order."""
        out: list[Mention] = []
        lowered = text.lower()
        for clause_start, clause in _clauses(lowered):
            for match in self._mentions_re.finditer(clause):
                phrase = _normalise(match.group(0))
                finding = self._phrase_to_finding[phrase]
                negated = self._pre_negated(clause[: match.start()]) or self._post_negated(
                    clause[match.end():]
                )
                out.append(Mention(finding, phrase, clause_start + match.start(),
                                   clause_start + match.end(), negated))
        return out

    def _pre_negated(self, before: str) -> bool:
        cues = list(self._pre_re.finditer(before))
        if not cues:
            return False
        last = cues[-1]
        between = before[last.end():]
        if self._term_re.search(between):
            return False
        if "," in between and self._descriptor_re.search(between.rsplit(",", 1)[1]):
            return False
        # A plain list ("no effusion, consolidation or nodule") stays in the negation's scope.
        return len(_WORD.findall(between)) <= self.window

    def _post_negated(self, after: str) -> bool:
        match = self._post_re.search(after)
        if match is None:
            return False
        between = after[: match.start()]
        if self._term_re.search(between) or self._mentions_re.search(between):
            return False
        return len(_WORD.findall(between)) <= self.post_window

    def extract(self, text: str) -> dict[str, bool]:
        """``{finding: present}`` for every finding of the vocabulary."""
        present = dict.fromkeys(self.vocabulary.names, False)
        for mention in self.mentions(text):
            if not mention.negated:
                present[mention.finding] = True
        return present


def _normalise(phrase: str) -> str:
    return re.sub(r"\s+", " ", phrase.strip().lower())


def _clauses(text: str) -> list[tuple[int, str]]:
    """Split into sentences/clauses, keeping each clause's offset in ``text``."""
    out: list[tuple[int, str]] = []
    pos = 0
    for piece in _SENTENCE_SPLIT.split(text):
        if not piece:
            continue
        start = text.find(piece, pos)
        out.append((start, piece))
        pos = start + len(piece)
    return out


LLM_EXTRACTION_PROMPT = (
    "Read the radiology report below and answer with one JSON object whose keys are exactly "
    "the findings listed, each true if the report states the finding is present and false if "
    "it is absent, negated or resolved.\nFindings: {findings}\n\nReport:\n{report}\n\nJSON:"
)


def parse_llm_answer(answer: str, names: Iterable[str]) -> dict[str, bool] | None:
    """Parse the first JSON object in an LLM answer; missing keys are False, unparsable → None."""
    match = re.search(r"\{.*?\}", answer, flags=re.DOTALL)
    if match is None:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    lowered = {str(k).strip().lower().replace(" ", "_"): v for k, v in data.items()}
    out: dict[str, bool] = {}
    for name in names:
        value = lowered.get(name, False)
        out[name] = value is True or (isinstance(value, str) and value.strip().lower() == "true")
    return out


@dataclass
class LLMExtractor:
    """Ask a local causal LM for a JSON of booleans (the paper used gpt-oss:120b this way).

    ``model``/``tokenizer`` are a loaded Hugging Face causal LM (see :func:`voxelfm.report.lm.load_lm`).
    Unparsable answers fall back to ``fallback`` (the rule-based extractor by default) and are
    counted in ``n_unparsed`` so an evaluation can report them.
    """

    model: Any
    tokenizer: Any
    vocabulary: FindingVocabulary = field(default_factory=FindingVocabulary.ct_rate)
    max_new_tokens: int = 256
    fallback: FindingExtractor | None = None
    n_unparsed: int = 0

    def extract(self, text: str) -> dict[str, bool]:
        import torch

        names = self.vocabulary.names
        prompt = LLM_EXTRACTION_PROMPT.format(findings=", ".join(names), report=text)
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True,
                return_tensors="pt", return_dict=True)["input_ids"]
        else:
            ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        answer = self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        parsed = parse_llm_answer(answer, names)
        if parsed is None:
            self.n_unparsed += 1
            fallback = self.fallback or RuleBasedExtractor(self.vocabulary)
            return fallback.extract(text)
        return parsed
