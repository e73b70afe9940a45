"""The guard: words whose change changes the answer while barely moving a sentence embedding.

"Convert 5 km to miles" and "convert 8 km to miles" are near neighbours for any sentence
encoder (cosine 0.95+ with the default encoder), and so are "sort a list in Python" and "sort a
list in Rust", "turn on dark mode" and "turn off dark mode", "JSON to YAML" and "YAML to JSON",
"the capital of Canada" and "the capital of Brazil". On data/cache/pairs.jsonl such near misses
are on average *more* similar than true paraphrases, so no threshold alone separates them.

A semantic hit therefore also needs an equal guard: a canonical set of
- numbers (digits and number words; thousands separators removed);
- whether the text is negated (not, no, never, without, n't...);
- slot words from closed classes, each mapped to a canonical token so that synonyms agree
  ("js" = "javascript", "km" = "kilometres", "spanish" = "spain"): programming languages and data
  formats, tools and platforms, measurement units and currencies, countries and their languages,
  and "turn on" / "turn off";
- the target of a conversion ("... to X", "... into X", "... in X") when X is a slot word, so
  "JSON to YAML" and "YAML to JSON" differ; targets are compared only when both texts name one,
  so "how many miles is 5 km" still matches "convert 5 km to miles".

Then same_question() compares the two texts themselves: a near miss keeps the sentence and swaps
a content word ("the capital of Canada" / "of Brazil", "words" / "lines"), a paraphrase rewords
the frame ("how do I" / "what's the way to"). So when two texts share most of their tokens and an
aligned replacement swaps content words, they are different questions; and two texts that
share under half of their content words are never the same question, however close their
embeddings (a static encoder scores "what are regexes for" and "what are the rules of checkers"
at 0.71).

These are cheap, exact checks on top of the similarity threshold, not a parser. The word lists
and rules were written by the same hand as data/cache/pairs.jsonl and tuned on its calibration
half: the held-out half measures them fairly for that kind of text, but expect lower precision
on other traffic, and synonyms swapped in an otherwise identical sentence ("invented" /
"created") are misses.
"""

from __future__ import annotations

import difflib
import functools
import re

_WORD = re.compile(r"[a-z][a-z0-9+#]*(?:'[a-z]+)?|\d+(?:[.,]\d+)*")
_NUMBER_WORDS = {  # not "one": mostly a pronoun ("which one is faster")
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000, "million": 10**6,
    "billion": 10**9, "dozen": 12, "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th",
}
_NEGATION = {"not", "no", "never", "without", "cannot", "none", "nor", "neither", "except", "excluding", "unless"}

# One group per line: "class: a/b/c d/e ...": words joined by "/" are synonyms (one canonical token, the first).
_GROUPS = """
lang: python/py/python3 javascript/js/node/nodejs/ecmascript typescript/ts java c c++/cpp c#/csharp golang rust
lang: ruby php swift kotlin scala sql bash/shell/sh/zsh powershell haskell perl lua dart julia matlab elixir
lang: clojure fortran cobol assembly html css
fmt: json yaml/yml xml csv toml markdown pdf docx xlsx png jpg/jpeg gif svg
tool: postgres/postgresql mysql sqlite mongodb redis excel react vue angular django flask pandas numpy
tool: docker kubernetes/k8s conda pip npm yarn chrome firefox safari
tool: iphone/ios ipad android windows macos/mac/macbook/osx linux ubuntu debian
unit: km/kilometer/kilometre/kilometers/kilometres mile/miles/mi meter/meters/metre/metres
unit: cm/centimeter/centimeters/centimetres mm/millimeter/millimeters inch/inches foot/feet/ft yard/yards
unit: kg/kilogram/kilograms/kilo/kilos gram/grams lb/lbs/pound/pounds oz/ounce/ounces
unit: celsius fahrenheit kelvin liter/liters/litre/litres ml/milliliter/milliliters/millilitre
unit: gallon/gallons quart/quarts pint/pints cup/cups tablespoon/tablespoons/tbsp teaspoon/teaspoons/tsp
unit: usd/dollar/dollars eur/euro/euros gbp jpy/yen mph kph gb/gigabyte/gigabytes mb/megabyte/megabytes
unit: kb/kilobyte/kilobytes tb/terabyte/terabytes byte/bytes percent/percentage/%
geo: usa/america/american/americans canada/canadian uk/britain/british/england mexico/mexican france/french
geo: germany/german italy/italian spain/spanish portugal/portuguese japan/japanese china/chinese/mandarin
geo: india/indian brazil/brazilian argentina/argentinian russia/russian egypt/egyptian thailand/thai
geo: switzerland/swiss sweden/swedish belgium/belgian iceland/icelandic australia/australian greece/greek
geo: turkey/turkish korea/korean netherlands/dutch poland/polish ireland/irish norway/norwegian
geo: europe/european africa/african asia/asian
"""


def _slots() -> dict[str, str]:
    table: dict[str, str] = {}
    for line in _GROUPS.strip().splitlines():
        kind, words = line.split(":", 1)
        for group in words.split():
            synonyms = group.split("/")
            for w in synonyms:
                table.setdefault(w, f"{kind}:{synonyms[0]}")
    return table


_SLOT = _slots()
_SLOT.update({w + suffix: slot for w, slot in list(_SLOT.items()) for suffix in ("s", "es")
              if w.isalpha() and len(w) > 2 and w + suffix not in _SLOT})  # plurals: one dict lookup per token
_TARGET = {"to", "into", "in"}  # "convert X to Y", "X in Y": the slot word right after is the conversion's target
_ARTICLES = {"a", "an", "the", "my", "your", "our"}
_OPERATOR = re.compile(r"(?<=[\d\s)])([-+*/^=<>])(?=\s*[\d(a-z])")  # "2x + 3 = 11", "x^2"; not "week-long"


def _number(token: str) -> str:
    digits = token.replace(",", "") if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", token) else token.replace(",", ".")
    try:
        value = float(digits)
    except ValueError:
        return token
    return str(int(value)) if value.is_integer() else repr(value)


@functools.lru_cache(maxsize=8192)  # entries are compared again and again; a text is hashed once per call
def salient(text: str) -> str:
    """The guard of a text: a short canonical string; equal guards are required for a semantic hit."""
    lowered = text.lower().replace("\u2019", "'")  # typographic apostrophe
    found: set[str] = set()
    negated = False
    for symbol, unit in (("$", "usd"), ("€", "eur"), ("£", "gbp"), ("%", "percent"), ("°c", "celsius"),
                         ("°f", "fahrenheit")):
        if symbol in lowered:
            found.add("unit:" + unit)
    found.update("op:" + op for op in _OPERATOR.findall(lowered))
    tokens = _WORD.findall(lowered)
    if re.search(r"\bU\.?S\.?A?\b", text):  # "US" in capitals is the country, "us" the pronoun
        found.add("geo:usa")
    target = ""
    for i, token in enumerate(tokens):
        if token[0].isdigit():
            found.add("n:" + _number(token))
            continue
        if token in _NUMBER_WORDS:
            found.add("n:" + _number(str(_NUMBER_WORDS[token])))
            continue
        if token in _NEGATION or token.endswith("n't"):
            negated = True
            continue
        if token in ("on", "off") and i > 0 and tokens[i - 1] in ("turn", "switch", "toggle", "power"):
            found.add("switch:" + token)  # "turn on" / "turn off"
            continue
        slot = _SLOT.get(token)
        if slot is None:
            continue
        found.add(slot)
        j = i - 1
        while j > 0 and tokens[j] in _ARTICLES:
            j -= 1
        if j >= 0 and tokens[j] in _TARGET:
            target = slot
    base = " ".join(sorted(found) + (["!"] if negated else []))
    return f"{base}|{target}" if target else base


def guards_match(a: str, b: str) -> bool:
    """Equal slot sets, and equal conversion targets when both texts name one (redis_store.LOOKUP does the same)."""
    base_a, _, target_a = a.partition("|")
    base_b, _, target_b = b.partition("|")
    return base_a == base_b and (not target_a or not target_b or target_a == target_b)


# Function words and the words people use to frame a question ("how do I", "explain", "what's the way to"):
# rewording them is what paraphrases do, so they never count as a substituted content word.
_FRAME_WORDS = """
a an the of to in on for at by with from into onto about as and or but if then so than that this these those
it its is are was were be been being am do does did doing done have has had having i me my mine we our us you your
yours u he she they them their his her what whats which who whom whose when where why how can could would should will
shall may might must please tell explain describe define meaning mean means way ways exactly actually really just
simple simply terms some any there here thing things get got make makes need want know like one ok okay help give
show let steps step tips tip guide vs versus difference between s t m re ll d ve
"""
_FRAME = frozenset(_FRAME_WORDS.split())
_TOKEN = re.compile(r"[a-z0-9+#]+")
MIN_SHARED_FRAME = 0.6  # token-level similarity from which a substituted content word means a different question
MIN_SHARED_CONTENT = 0.5  # share of the sparser text's content words the other must contain
MAX_TOKENS = 64  # longer texts are compared by their head and tail (the guard still sees every number and slot word)


def _same_word(x: str, y: str) -> bool:
    """Inflections and typos of one word: dict/dicts, sort/sorting, wether/weather."""
    if x == y:
        return True
    short, long = sorted((x, y), key=len)
    if len(short) >= 4 and long.startswith(short[:-1]) and len(long) - len(short) <= 3:
        return True
    if len(short) < 5 or len(long) - len(short) > 2 or (x[0] != y[0] and x[-1] != y[-1]):
        return False  # cheap filters before difflib: a typo keeps the length and one end
    matcher = difflib.SequenceMatcher(None, x, y)
    return matcher.quick_ratio() >= 0.85 and matcher.ratio() >= 0.85  # quick_ratio: a cheap upper bound


@functools.lru_cache(maxsize=8192)
def _canonical_tokens(text: str) -> tuple[str, ...]:
    """Tokens with numbers and slot words in canonical form: "five kilometers" = "5 km"."""
    out = []
    for token in _TOKEN.findall(text.lower().replace("'", "")):
        if token[0].isdigit():
            token = _number(token)
        elif token in _NUMBER_WORDS:
            token = _number(str(_NUMBER_WORDS[token]))
        else:
            token = _SLOT.get(token, token)
        out.append(token)
    if len(out) > MAX_TOKENS:
        out = out[: MAX_TOKENS - MAX_TOKENS // 3] + out[-(MAX_TOKENS // 3):]
    return tuple(out)


def same_question(a: str, b: str) -> bool:
    """False when b is a's sentence with a content word swapped for another (capital of Canada / of Brazil).

    Near misses keep the frame and swap one or two content words; paraphrases reword the frame. So when the
    two token sequences are mostly the same (difflib ratio >= MIN_SHARED_FRAME) and an aligned replacement
    swaps content words on both sides (not inflections or typos of each other), they are different questions.
    Inserted or dropped words are allowed ("reverse a list" / "reverse a list in place, please").
    """
    ta, tb = _canonical_tokens(a), _canonical_tokens(b)
    ca, cb = {w for w in ta if w not in _FRAME}, {w for w in tb if w not in _FRAME}
    fewer, more = sorted((ca, cb), key=len)
    exact = fewer & more
    shared = len(exact)
    if shared < MIN_SHARED_CONTENT * len(fewer):  # exact matches first: fuzzy matching only for the rest
        by_end: dict[str, list[str]] = {}  # an inflection or a typo keeps the first or the last letter
        for y in more - exact:
            by_end.setdefault("<" + y[0], []).append(y)
            by_end.setdefault(">" + y[-1], []).append(y)
        shared += sum(any(_same_word(x, y) for y in by_end.get("<" + x[0], []) + by_end.get(">" + x[-1], []))
                      for x in fewer - exact)
        if shared < MIN_SHARED_CONTENT * len(fewer):
            return False
    matcher = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    if matcher.ratio() < MIN_SHARED_FRAME:
        return True
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op != "replace":
            continue
        left = [w for w in ta[i1:i2] if w not in _FRAME]
        right = [w for w in tb[j1:j2] if w not in _FRAME]
        # a swap: a content word on each side that is no form of any word on the other (else an insertion)
        if any(not any(_same_word(x, y) for y in right) for x in left) and \
                any(not any(_same_word(y, x) for x in left) for y in right):
            return False
    return True
