"""The reference profile of a model version: what monitoring compares its served traffic with.

Stage `reference` builds it from the candidate's own data and promote registers it with the
version (`reference.parquet`), so any host that reads the registry can monitor the version
without the workspace that trained it. One row per sampled text:
    source "train"  a seeded sample of the training split (the texts people wrote, before
                    augmentation): length, true label, share of unknown tokens, embedding;
    source "test"   a seeded sample of the test split as the serving variant answers it:
                    length, predicted label, confidence, entropy, share of unknown tokens.
A token classifier's rows are sentences: their label is the set of entity types they hold
(`entity_signature`), their confidence and entropy the means over their words.
The file's metadata names the embedding model, so served texts are embedded the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.lib.errors import PipelineError

REFERENCE_FILE = "reference.parquet"
_EMBEDDING_MODEL = b"textclf.embedding_model"
TRAIN, TEST = "train", "test"


class ReferenceError(PipelineError, ValueError):
    """A reference profile is missing or unreadable; the message names the file."""


@dataclass(frozen=True)
class ReferenceProfile:
    table: pd.DataFrame
    embedding_model: str  # a path or `pkg:` spec, as tasks.lib.training.models.resolve_base_model reads it

    @property
    def train(self) -> pd.DataFrame:
        return self.table[self.table["source"] == TRAIN]

    @property
    def test(self) -> pd.DataFrame:
        return self.table[self.table["source"] == TEST]

    def embeddings(self) -> np.ndarray:
        """The training sample's sentence embeddings, one row per text."""
        return np.stack(self.train["embedding"].to_numpy()).astype(np.float32)


def unknown_shares(texts: Sequence[str], tokenizer_file: Path) -> np.ndarray:
    """Per text, the share of its tokens that are the tokenizer's unknown token (0 for a text without tokens)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    unknown = getattr(tokenizer.model, "unk_token", None)
    unknown_id = tokenizer.token_to_id(unknown) if unknown else None
    if unknown_id is None:  # byte-level vocabularies have no unknown token
        return np.zeros(len(texts))
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return np.array([np.mean(np.array(e.ids) == unknown_id) if e.ids else 0.0 for e in encodings])


def sentence_embeddings(texts: Sequence[str], model_path: str, batch_size: int = 64) -> np.ndarray:
    """Normalised sentence embeddings (sentence-transformers: mean pooling over the encoder's tokens)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")
    return model.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=len(texts) >= 2000,
    ).astype(np.float32)


def build_profile(
    train: pd.DataFrame, test: pd.DataFrame, folder: Path, model_file: str, embedding_model: str
) -> pd.DataFrame:
    """The profile's rows: `train` with embeddings, `test` as the model `folder/model_file` answers it.

    Args:
        train, test: tables with the text and label columns (already sampled).
        folder: a servable model folder (graph, tokenizer.json, classifier.json).
        embedding_model: a folder sentence-transformers loads.
    """
    from tasks.lib.artifacts import TOKENIZER_FILE
    from tasks.lib.columns import LABEL, TEXT
    from tasks.lib.data.sentences import as_sentences, entity_signature, entity_types
    from tasks.lib.evaluation.metrics import entropy, softmax
    from tasks.lib.inference.onnx_classifier import ClassifierInfo, OnnxClassifier
    from tasks.lib.inference.onnx_tagger import certainty, onnx_tagger
    from tasks.lib.inference.word_logits import flatten

    train_texts, test_texts = list(train[TEXT]), list(test[TEXT])
    info = ClassifierInfo.load(folder)
    if info.task == "token_classification":
        tagger = onnx_tagger(folder, model_file)
        per_sentence = [softmax(flatten([w], info.labels)[0]) for w in tagger.word_logits(as_sentences(test_texts))]
        predicted = [entity_signature(entity_types([info.labels[i] for i in p.argmax(axis=1)])) for p in per_sentence]
        certain = np.array([certainty(p) for p in per_sentence]).reshape(-1, 2)
        confidence, spread = certain[:, 0], certain[:, 1]
        truth = [entity_signature(entity_types(tags)) for tags in as_sentences(train[LABEL])]
    else:
        probabilities = softmax(OnnxClassifier(folder, model_file).logits(test_texts))
        predicted = [info.labels[i] for i in probabilities.argmax(axis=1)]
        confidence, spread = probabilities.max(axis=1), entropy(probabilities)
        truth = list(train[LABEL].astype(str))
    tokenizer = folder / TOKENIZER_FILE
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "source": TRAIN,
                    "text_chars": [len(t) for t in train_texts],
                    "label": np.array(truth, dtype=object),
                    "unknown_share": unknown_shares(train_texts, tokenizer),
                    "embedding": list(sentence_embeddings(train_texts, embedding_model)),
                }
            ),
            pd.DataFrame(
                {
                    "source": TEST,
                    "text_chars": [len(t) for t in test_texts],
                    "label": np.array(predicted, dtype=object),
                    "confidence": confidence,
                    "entropy": spread,
                    "unknown_share": unknown_shares(test_texts, tokenizer),
                }
            ),
        ],
        ignore_index=True,
    )


def write_profile(table: pd.DataFrame, path: Path, embedding_model: str) -> None:
    """Write the profile as one Parquet file (atomically), the embedding model in its metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.lib.io import atomic_path

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), _EMBEDDING_MODEL: embedding_model.encode()})
    with atomic_path(path) as staging:
        pq.write_table(arrow, staging)


def read_profile(path: Path) -> ReferenceProfile:
    """The profile at `path`.

    Raises:
        ReferenceError: the file is missing (a version registered before profiles existed) or damaged.
    """
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ReferenceError(
            f"{path}: no reference profile; versions registered before stage `reference` existed have none: "
            "promote a new version (dvc repro) to monitor it"
        )
    import pyarrow as pa

    try:
        arrow = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise ReferenceError(f"{path}: damaged reference profile ({type(exc).__name__}: {exc})") from None
    model = (arrow.schema.metadata or {}).get(_EMBEDDING_MODEL)
    if model is None:
        raise ReferenceError(f"{path}: the reference profile does not name its embedding model")
    return ReferenceProfile(arrow.to_pandas(), model.decode())
