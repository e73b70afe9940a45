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
from collections.abc import Sequence
from dataclasses import dataclass

_WORD = re.compile(r"[a-z][a-z0-9+#]*(?:'[a-z]+)?|\d+(?:[.,]\d+)*")
_NUMBER_WORDS = {  # not "one": mostly a pronoun ("which one is faster")
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000, "million": 10**6,
    "billion": 10**9, "dozen": 12, "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th",
    "twice": 2, "thrice": 3, "half": 0.5,
}
_MULTIPLIERS = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
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
_OPERATOR = re.compile(r"[-+*/^=<>]")
_USA = re.compile(r"\bU\.?S\.?A?\b")
_LEFT_OPERAND = re.compile(r"(?:\d|\)|(?<![a-z])[a-z])\s*$")  # "2", "(x + 1)", "2x", "x": not "fund"
_RIGHT_OPERAND = re.compile(r"^\s*(?:[\d(]|[a-z](?![a-z]))")  # "3", "(", "x", "2x": not "how"
# "at least one" / "exactly one" / "more than two": frame words that change the question; "exactly" only before a
# number ("what exactly is a closure" is a paraphrase of "what is a closure").
_NUM = r"(?:\d|one\b|two|three|four|five|six|seven|eight|nine|ten\b|twenty|a hundred|a thousand|a dozen|half)"
_QUANTIFIERS = tuple((slot, triggers.split(), re.compile(pattern)) for slot, triggers, pattern in (
    # (slot, words one of which the text must contain before the pattern is tried: a substring test is ~100x
    # cheaper than a regular-expression pass, and most texts contain none of them)
    ("q:min", "least less fewer more minimum",
     r"\bat least\b|\bno (?:less|fewer) than\b|\bor more\b|\bminimum of\b"),
    ("q:max", "most up less fewer maximum",
     r"\bat most\b|\bno more than\b|\bup to\b|\bor (?:less|fewer)\b|\bmaximum of\b"),
    ("q:gt", "more greater larger bigger higher over",
     r"\b(?:more|greater|larger|bigger|higher|over)\s+(?:than\s+)?" + _NUM),
    ("q:lt", "less fewer smaller lower under", r"\b(?:less|fewer|smaller|lower|under)\s+(?:than\s+)?" + _NUM),
    ("q:exact", "exactly precisely only just", r"\b(?:exactly|precisely|only|just)\s+" + _NUM),
))


def _number(token: str) -> str:
    digits = token.replace(",", "") if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", token) else token.replace(",", ".")
    try:
        value = float(digits)
    except ValueError:
        return token
    return str(int(value)) if value.is_integer() else repr(value)


def _operators(lowered: str) -> set[str]:
    """Arithmetic operators between operands ("2x + 3 = 11", "x^2", "3/4"); not a dash between words
    ("ETF vs mutual fund - how are they different?") nor a hyphen ("week-long", "x-ray")."""
    return {"op:" + m.group() for m in _OPERATOR.finditer(lowered)
            if _LEFT_OPERAND.search(lowered[max(0, m.start() - 8):m.start()])
            and _RIGHT_OPERAND.match(lowered[m.end():m.end() + 3])}


def _numbers(tokens: list[str]) -> tuple[list[str | None], set[str]]:
    """Each token's canonical number (None for other tokens) and the set of numbers: a run of number words is one
    value ("twenty five" = 25, "two hundred" = 200, "5 million" = 5000000)."""
    out: list[str | None] = [None] * len(tokens)
    found: set[str] = set()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not (token[0].isdigit() or token in _NUMBER_WORDS):
            i += 1
            continue
        value = _NUMBER_WORDS.get(token, token)
        if isinstance(value, str):  # digits or an ordinal
            digits = _number(value)
            j = i + 1
            if j < len(tokens) and tokens[j] in _MULTIPLIERS and digits.replace(".", "", 1).isdigit():
                digits = _number(repr(float(digits) * _MULTIPLIERS[tokens[j]]))
                j += 1
        else:
            total, current, j = 0.0, float(value), i + 1
            while j < len(tokens) and isinstance(_NUMBER_WORDS.get(tokens[j]), int | float) and tokens[j] != "half":
                word = _NUMBER_WORDS[tokens[j]]
                if tokens[j] in _MULTIPLIERS:
                    current = max(current, 1.0) * word
                    if word >= 1000:
                        total, current = total + current, 0.0
                else:
                    current += word
                j += 1
            digits = _number(repr(total + current))
        for k in range(i, j):
            out[k] = digits
        found.add(digits)
        i = j
    return out, found


def _word(token: str) -> str:
    """A possessive is its word: "python's" = "python"."""
    return token[:-2] if token.endswith("'s") else token


@functools.lru_cache(maxsize=8192)
def _parsed(text: str) -> tuple[str, list[str], list[str | None], set[str]]:
    """The lower-cased text, its word tokens, each token's number and the numbers: shared by salient() and
    canonical_tokens() (a text is tokenised once per lookup). Callers must not modify the lists."""
    lowered = text.lower().replace("\u2019", "'")  # typographic apostrophe
    tokens = [_word(t) for t in _WORD.findall(lowered)]
    numbers, values = _numbers(tokens)
    return lowered, tokens, numbers, values


@functools.lru_cache(maxsize=8192)  # entries are compared again and again; a text is hashed once per call
def salient(text: str) -> str:
    """The guard of a text: a short canonical string; equal guards are required for a semantic hit."""
    lowered, tokens, numbers, values = _parsed(text)
    found: set[str] = set()
    negated = False
    for symbol, unit in (("$", "usd"), ("€", "eur"), ("£", "gbp"), ("%", "percent"), ("°c", "celsius"),
                         ("°f", "fahrenheit")):
        if symbol in lowered:
            found.add("unit:" + unit)
    found |= _operators(lowered)
    found.update(slot for slot, triggers, pattern in _QUANTIFIERS
                 if any(t in lowered for t in triggers) and pattern.search(lowered))
    if ("US" in text or "U.S" in text) and _USA.search(text):  # "US" in capitals is the country, "us" the pronoun
        found.add("geo:usa")
    found.update("n:" + v for v in values)
    target = ""
    for i, token in enumerate(tokens):
        if numbers[i] is not None:
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
# rewording them is what paraphrases do, so they never count as a substituted content word. "user" and
# "assistant" are the role prefixes of a multi-turn conversation's embedded text.
_FRAME_WORDS = """
a an the of to in on for at by with from into onto about as and or but if then so than that this these those
it its is are was were be been being am do does did doing done have has had having i me my mine we our us you your
yours u he she they them their his her what whats which who whom whose when where why how can could would should will
shall may might must please tell explain describe define meaning mean means way ways exactly actually really just
simple simply terms some any there here thing things get got make makes need want know like one ok okay help give
show let steps step tips tip guide vs versus difference between s t m re ll d ve user assistant
"""
_FRAME = frozenset(_FRAME_WORDS.split())
# Everyday synonyms: one canonical token per group (the first), so "flu" and "influenza" are the same word. Only
# words that mean the same in every sense people type them in: "fall" (autumn / to fall) is not here.
_SYNONYM_GROUPS = """
flu/influenza fridge/refrigerator tv/television photo/photos/picture/pictures/pic/pics/photograph/photographs
movie/movies/film/films kid/kids/child/children mom/mother/mum dad/father doctor/doctors/physician/doc
annual/annually/yearly/year-long buy/purchase begin/start big/large/huge biggest/largest fast/quick/quickly/rapid
couch/sofa holiday/vacation trash/garbage/rubbish bike/bicycle info/information phone/smartphone/cellphone
pc/computer stomach/tummy/belly sick/ill remove/delete/erase medicine/medication/meds/medications
cheap/inexpensive/affordable teen/teenager/teenagers/teens/adolescent baby/babies/infant/infants
gas/petrol pants/trousers eggplant/aubergine zucchini/courgette cilantro/coriander shrimp/prawn/prawns
lawyer/attorney hard/difficult invented/created/invent/create sea/ocean short/brief author/wrote/writer
veggies/vegetables repair/fix scifi/sci-fi sofas/couches autumn/fall
"""
_SYNONYM = {w: group.split("/")[0] for group in _SYNONYM_GROUPS.split() for w in group.split("/")}
MIN_SHARED_FRAME = 0.6  # token-level similarity from which a substituted content word means a different question
MIN_SHARED_CONTENT = 0.5  # share of the sparser text's content words the other must contain
MAX_TOKENS = 64  # longer texts are compared by their head and tail (the guard still sees every number and slot word)
_SUFFIXES = frozenset({"s", "es", "ed", "d", "ing", "er", "ers", "ly", "ies", "ied", "ion", "ions", "al"})
_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS = {c: {row[j] for r2 in range(max(0, r - 1), min(3, r + 2)) for row in [_KEYBOARD[r2]]
                   for j in range(max(0, i - 1), min(len(row), i + 2))} - {c}
               for r, row in enumerate(_KEYBOARD) for i, c in enumerate(row)}


def _inflection(short: str, long: str) -> bool:
    """long is short with an inflection suffix: dict/dicts, sort/sorting, copy/copies, stop/stopping, use/used."""
    stems = [short] + ([short[:-1]] if short[-1] in "ey" else [])
    for stem in stems:
        if len(stem) >= 3 and long.startswith(stem):
            rest = long[len(stem):]
            if rest in _SUFFIXES or (rest[:1] == stem[-1] and rest[1:] in _SUFFIXES):
                return True
    return False


def _typo(x: str, y: str) -> bool:
    """One slip of the keyboard: a dropped, doubled or inserted letter (wether / weather), two neighbours swapped
    (recieve / receive), or a key struck for its neighbour (teh / the is a swap; "hwllo" / "hello"). Two real words
    one letter apart are not typos of each other unless the keys are neighbours: maternity / paternity differ."""
    if len(x) < 5 or len(y) < 5 or abs(len(x) - len(y)) > 1:
        return False
    if len(x) == len(y):
        diff = [i for i in range(len(x)) if x[i] != y[i]]
        if len(diff) == 1:
            i = diff[0]
            return i > 0 and y[i] in _NEIGHBOURS.get(x[i], ())  # the first letter is rarely mistyped
        return len(diff) == 2 and diff[1] == diff[0] + 1 and x[diff[0]] == y[diff[1]] and x[diff[1]] == y[diff[0]]
    short, long = sorted((x, y), key=len)
    i = next((k for k in range(len(short)) if short[k] != long[k]), len(short))
    return short[i:] == long[i + 1:]


def _same_word(x: str, y: str) -> bool:
    """Inflections and typos of one word: dict/dicts, sort/sorting, wether/weather; not maternity/paternity."""
    if x == y:
        return True
    short, long = sorted((x, y), key=len)
    return _inflection(short, long) or _typo(x, y)


@functools.lru_cache(maxsize=8192)
def canonical_tokens(text: str) -> tuple[str, ...]:
    """Tokens with numbers, slot words and synonyms in canonical form: "five kilometers" = "5 km", "flu" =
    "influenza", "python's" = "python"."""
    _, tokens, numbers, _ = _parsed(text)
    out: list[str] = []
    for i, word in enumerate(tokens):
        token = word.replace("'", "")
        number = numbers[i]
        if number is not None:
            if i == 0 or numbers[i - 1] != number:  # a run of number words is one token
                out.append(number)
            continue
        out.append(_SLOT.get(token) or _SYNONYM.get(token, token))
    if len(out) > MAX_TOKENS:
        out = out[: MAX_TOKENS - MAX_TOKENS // 3] + out[-(MAX_TOKENS // 3):]
    return tuple(out)


_SOURCE, _DESTINATION = {"from"}, {"to", "into", "onto", "towards"}
_ALTERNATIVE = {"than", "instead", "over", "with"}  # X than Y, X instead of Y, X over Y, replace X with Y
# What a question asks for: "when did the first man land on the Moon" and "who was the first man on the Moon"
# share every content word. Two texts that each ask with one of these and share none ask different things.
_INTENTS = {"who": "who", "whom": "who", "whose": "who", "when": "when", "where": "where", "why": "why"}


def _content(tokens: Sequence[str], start: int, step: int, limit: int = 3) -> str | None:
    """The first content word from tokens[start] in direction step, within limit tokens."""
    i = start
    while 0 <= i < len(tokens) and abs(i - start) < limit:
        if tokens[i] not in _FRAME and tokens[i] != "of":
            return tokens[i]
        i += step
    return None


@functools.lru_cache(maxsize=8192)
def roles(tokens: tuple[str, ...]) -> dict[str, str]:
    """Who is what in a relation: the source after "from" (or before "to" in a text without "from"), the
    destination after "to" / "into", the two sides of "than" / "instead of" / "over": "from monthly to annual"
    gives {"src": "monthly", "dst": "annual"}. The first occurrence of each role counts."""
    out: dict[str, str] = {}
    has_from = "from" in tokens
    for i, token in enumerate(tokens):
        if token in _SOURCE:
            word = _content(tokens, i + 1, 1)
            if word:
                out.setdefault("src", word)
        elif token in _DESTINATION or token in _ALTERNATIVE:
            kind = "dst" if token in _DESTINATION else "alt"
            after = _content(tokens, i + 1, 1)
            if after:
                out.setdefault(kind, after)
            before = _content(tokens, i - 1, -1)
            if before and (kind == "alt" or not has_from):
                out.setdefault("src" if kind == "dst" else "pick", before)
    return out


def swapped_roles(ta: tuple[str, ...], tb: tuple[str, ...]) -> bool:
    """The same words in swapped roles: "from monthly to annual" / "from annual to monthly", "45 degrees to
    radians" / "45 radians to degrees", "butter instead of oil" / "oil instead of butter". Only a role both texts
    fill counts, and only with words both texts contain (so rewording the frame is not a swap)."""
    ra, rb = roles(ta), roles(tb)
    sa, sb = set(ta), set(tb)
    return any(ra[r] != rb[r] and ra[r] in sb and rb[r] in sa for r in ra.keys() & rb.keys())


def same_question(a: str, b: str) -> bool:
    """False when b is a's sentence with a content word swapped for another (capital of Canada / of Brazil) or
    with two words in swapped roles (swapped_roles).

    Near misses keep the frame and swap one or two content words; paraphrases reword the frame. So when the
    two token sequences are mostly the same (difflib ratio >= MIN_SHARED_FRAME) and an aligned replacement
    swaps content words on both sides (not inflections or typos of each other), they are different questions.
    Inserted or dropped words are allowed ("reverse a list" / "reverse a list in place, please").
    """
    return compare(a, b).same


@dataclass(frozen=True)
class Comparison:
    """What same_question reads of two texts; the verifier's features are made of it."""

    shared_content: float  # share of the sparser text's content words the other contains (inflections, typos)
    covered: float  # share of the richer text's content words the other contains
    frame_ratio: float  # difflib ratio of the two canonical token sequences
    swap: bool  # an aligned replacement swaps content words
    roles_swapped: bool
    intent_differs: bool  # who / when / where / why: each text asks with some, and not with the same
    content: tuple[int, int]  # content words of a and of b

    @property
    def same(self) -> bool:
        if self.roles_swapped or self.intent_differs or self.shared_content < MIN_SHARED_CONTENT:
            return False
        return self.frame_ratio < MIN_SHARED_FRAME or not self.swap


@functools.lru_cache(maxsize=4096)
def compare(a: str, b: str) -> Comparison:
    ta, tb = canonical_tokens(a), canonical_tokens(b)
    ca, cb = {w for w in ta if w not in _FRAME}, {w for w in tb if w not in _FRAME}
    fewer, more = sorted((ca, cb), key=len)
    exact = fewer & more
    shared = len(exact)
    by_end: dict[str, list[str]] = {}  # an inflection or a typo keeps the first or the last letter
    for y in more - exact:
        by_end.setdefault("<" + y[0], []).append(y)
        by_end.setdefault(">" + y[-1], []).append(y)
    matched = {y for x in fewer - exact for y in by_end.get("<" + x[0], []) + by_end.get(">" + x[-1], [])
               if _same_word(x, y)}
    shared += sum(any(_same_word(x, y) for y in matched) for x in fewer - exact)
    # Align only what differs: a common head and tail are matched as they are (a near-duplicate's alignment is a
    # few tokens long instead of the whole text; difflib is the costly part of a lookup).
    head = 0
    while head < min(len(ta), len(tb)) and ta[head] == tb[head]:
        head += 1
    tail = 0
    while tail < min(len(ta), len(tb)) - head and ta[-1 - tail] == tb[-1 - tail]:
        tail += 1
    mid_a, mid_b = ta[head:len(ta) - tail], tb[head:len(tb) - tail]
    matcher = difflib.SequenceMatcher(None, mid_a, mid_b, autojunk=False)
    matches = head + tail + sum(block.size for block in matcher.get_matching_blocks())
    ratio = 2.0 * matches / max(1, len(ta) + len(tb))
    swap = False
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op != "replace":
            continue
        left = [w for w in mid_a[i1:i2] if w not in _FRAME]
        right = [w for w in mid_b[j1:j2] if w not in _FRAME]
        # a swap: a content word on each side that is no form of any word on the other (else an insertion)
        if any(not any(_same_word(x, y) for y in right) for x in left) and \
                any(not any(_same_word(y, x) for x in left) for y in right):
            swap = True
            break
    ia, ib = {_INTENTS[w] for w in ta if w in _INTENTS}, {_INTENTS[w] for w in tb if w in _INTENTS}
    return Comparison(shared / max(1, len(fewer)), (len(exact) + len(matched)) / max(1, len(more)),
                      ratio, swap, swapped_roles(ta, tb), bool(ia and ib and not ia & ib),
                      (len(ca), len(cb)))
