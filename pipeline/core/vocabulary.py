"""The commands of a seeds folder: the class names, what each says, and the language they are spoken in.

Everything that names the commands derives from here: the synthetic voices that say them, the near-miss
words and keyword-free talk around them, the development and evaluation sets. The class names are the
seeds folder's sub-folders (``FONDO`` is the background); each command says its folder name in lower case
(``SALIR`` -> "salir", ``LUZ_ON`` -> "luz on") in Spanish unless ``<seeds>/words.toml`` says otherwise::

    language = "en"                 # an espeak-ng language (espeak-ng --voices)
    [words]
    LUZ_ON = "lights on"            # what the command says, when the folder name is not the word

``python -m pipeline.core.vocabulary SEEDS --out FILE`` writes the vocabulary as JSON only when it changed
(a make value stamp: the TTS sets are rebuilt when the commands change, not when a seed is re-recorded).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.io import write_text_if_changed

BACKGROUND_CLASS = "FONDO"
WORDS_FILE = "words.toml"
DEFAULT_LANGUAGE = "es"


class VocabularyError(ValueError):
    """A seeds folder or words.toml that names no usable commands; the message names the file and the fix."""


def fold(text: str) -> str:
    """Lower case without accents ('Salí' and 'sali' compare equal)."""
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")


def words_of(text: str) -> list[str]:
    """The words of ``text``, folded (punctuation and accents ignored)."""
    return "".join(c if c.isalnum() else " " for c in fold(text)).split()


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    language: str
    words: Mapping[str, str]  # command class -> what it says
    background: str = BACKGROUND_CLASS

    @property
    def commands(self) -> list[str]:
        return sorted(self.words)

    @property
    def classes(self) -> list[str]:
        return sorted([*self.words, self.background])

    def command_words(self) -> set[str]:
        """Every folded word of every command (a text holding one of them is not keyword-free)."""
        return {w for text in self.words.values() for w in words_of(text)}

    def hits(self, text: str) -> list[str]:
        """Words of ``text`` that contain a command word ('salir' and 'salirse' both count)."""
        keys = self.command_words()
        return [w for w in words_of(text) if any(k in w for k in keys)]

    def as_dict(self) -> dict[str, Any]:
        return {"language": self.language, "words": dict(sorted(self.words.items())), "background": self.background}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Vocabulary:
        return cls(language=str(data["language"]), words=dict(data["words"]),
                   background=str(data.get("background", BACKGROUND_CLASS)))


def spoken_text(class_name: str) -> str:
    return class_name.replace("_", " ").replace("-", " ").lower().strip()


def read_vocabulary(seeds: str | Path) -> Vocabulary:
    """The vocabulary of a seeds folder (its class folders and optional words.toml)."""
    root = Path(seeds)
    if not root.is_dir():
        raise VocabularyError(f"{root}: seeds folder not found; give the folder with one sub-folder per command")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    commands = [c for c in classes if c != BACKGROUND_CLASS]
    if not commands:
        raise VocabularyError(f"{root}: no command folders; add one sub-folder per command (and {BACKGROUND_CLASS}/)")
    language, given = DEFAULT_LANGUAGE, {}
    words_path = root / WORDS_FILE
    if words_path.is_file():
        try:
            with words_path.open("rb") as f:
                doc = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise VocabularyError(f"{words_path}: not valid TOML ({e}); see `python -m pipeline.core.vocabulary --help`") from None
        unknown = sorted(set(doc) - {"language", "words"})
        if unknown:
            raise VocabularyError(f"{words_path}: unknown keys {unknown}; only 'language' and a [words] table")
        language = str(doc.get("language", DEFAULT_LANGUAGE))
        given = dict(doc.get("words", {}))
        stray = sorted(set(given) - set(commands))
        if stray:
            raise VocabularyError(f"{words_path}: [words] names {stray}, which are not command folders of {root} "
                                  f"({', '.join(commands)}); fix the names or add the folders")
        empty = sorted(k for k, v in given.items() if not isinstance(v, str) or not words_of(v))
        if empty:
            raise VocabularyError(f"{words_path}: [words] {empty} say nothing; give each the text it says")
    words = {c: str(given.get(c, spoken_text(c))) for c in commands}
    folded = {c: " ".join(words_of(t)) for c, t in words.items()}
    same = sorted({c for c in commands for d in commands if c < d and folded[c] == folded[d]})
    if same:
        raise VocabularyError(f"{root}: commands {same} say the same thing; give each its own words ({words_path})")
    return Vocabulary(language=language, words=words)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("seeds", type=Path, help="seeds folder (one sub-folder per command, FONDO/, optional words.toml)")
    p.add_argument("--out", type=Path, help="write the vocabulary as JSON here, only if it changed")
    args = p.parse_args(argv)
    try:
        vocab = read_vocabulary(args.seeds)
    except VocabularyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(vocab.as_dict(), indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    if args.out is None:
        print(text, end="")
    else:
        write_text_if_changed(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
