"""The guard: tokens whose change changes the answer while barely moving a sentence embedding.

"Convert 5 km to miles" and "convert 8 km to miles" are near neighbours for any sentence
encoder, and so are "sort a list in Python" and "sort a list in Rust", or "is it safe" and "is it
not safe". A semantic hit therefore also needs the same guard: the set of numbers (digits and
number words, thousands separators removed), programming languages and data formats, units
and currencies, and whether the text is negated. Paraphrases keep these; near misses change
them. It is a cheap, exact check on top of the similarity threshold, not a parser: a change of
entity (Paris / Rome) is left to the embedding.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z][a-z0-9+#]*(?:'[a-z]+)?|\d+(?:[.,]\d+)*")
_NUMBER_WORDS = {  # not "one": mostly a pronoun ("which one is faster")
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000, "million": 10**6,
    "billion": 10**9, "dozen": 12,
}
_NEGATION = {"not", "no", "never", "without", "cannot", "can't", "don't", "doesn't", "isn't", "aren't", "won't",
             "shouldn't", "wouldn't", "didn't", "wasn't", "weren't", "mustn't", "none", "nor", "neither",
             "except", "excluding", "avoid", "unless"}
_LANGUAGES = {
    "python": "python", "py": "python", "javascript": "javascript", "js": "javascript", "node": "javascript",
    "nodejs": "javascript", "typescript": "typescript", "ts": "typescript", "java": "java", "c": "c",
    "c++": "c++", "cpp": "c++", "c#": "c#", "csharp": "c#", "golang": "go", "rust": "rust", "ruby": "ruby",
    "php": "php", "swift": "swift", "kotlin": "kotlin", "scala": "scala", "sql": "sql", "bash": "shell",
    "shell": "shell", "zsh": "shell", "powershell": "powershell", "haskell": "haskell", "perl": "perl",
    "lua": "lua", "dart": "dart", "julia": "julia", "matlab": "matlab", "elixir": "elixir", "clojure": "clojure",
    "html": "html", "css": "css", "json": "json", "yaml": "yaml", "yml": "yaml", "xml": "xml", "csv": "csv",
    "toml": "toml", "markdown": "markdown", "regex": "regex", "postgres": "postgres", "postgresql": "postgres",
    "mysql": "mysql", "sqlite": "sqlite", "mongodb": "mongodb", "excel": "excel", "r": "r", "fortran": "fortran",
    "cobol": "cobol", "assembly": "assembly", "react": "react", "vue": "vue", "angular": "angular",
    "django": "django", "flask": "flask", "pandas": "pandas", "numpy": "numpy", "linux": "linux",
    "windows": "windows", "macos": "macos", "mac": "macos", "ios": "ios", "android": "android",
}
_UNITS = {
    "km": "km", "kilometer": "km", "kilometers": "km", "kilometre": "km", "kilometres": "km",
    "mile": "mile", "miles": "mile", "mi": "mile", "m": "m", "meter": "m", "meters": "m", "metre": "m",
    "metres": "m", "cm": "cm", "centimeters": "cm", "centimetres": "cm", "mm": "mm", "millimeters": "mm",
    "inch": "inch", "inches": "inch", "foot": "foot", "feet": "foot", "ft": "foot",
    "yard": "yard", "yards": "yard", "kg": "kg", "kilogram": "kg", "kilograms": "kg", "kilo": "kg", "kilos": "kg",
    "g": "g", "gram": "g", "grams": "g", "lb": "lb", "lbs": "lb", "pound": "lb", "pounds": "lb",
    "oz": "oz", "ounce": "oz", "ounces": "oz", "celsius": "celsius", "°c": "celsius", "fahrenheit": "fahrenheit",
    "°f": "fahrenheit", "kelvin": "kelvin", "liter": "l", "liters": "l", "litre": "l", "litres": "l", "l": "l",
    "ml": "ml", "milliliters": "ml", "gallon": "gallon", "gallons": "gallon", "cup": "cup", "cups": "cup",
    "tablespoon": "tbsp", "tablespoons": "tbsp", "tbsp": "tbsp", "teaspoon": "tsp", "teaspoons": "tsp",
    "tsp": "tsp", "usd": "usd", "dollar": "usd", "dollars": "usd", "$": "usd", "eur": "eur", "euro": "eur",
    "euros": "eur", "€": "eur", "gbp": "gbp", "£": "gbp", "yen": "jpy", "jpy": "jpy", "mph": "mph", "kph": "kph",
    "km/h": "kph", "second": "s", "seconds": "s", "minute": "min", "minutes": "min", "hour": "h", "hours": "h",
    "day": "day", "days": "day", "week": "week", "weeks": "week", "month": "month", "months": "month",
    "year": "year", "years": "year", "gb": "gb", "mb": "mb", "kb": "kb", "tb": "tb", "percent": "%", "%": "%",
}


def _number(token: str) -> str:
    digits = token.replace(",", "") if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", token) else token.replace(",", ".")
    try:
        value = float(digits)
    except ValueError:
        return token
    return str(int(value)) if value.is_integer() else repr(value)


def salient(text: str) -> str:
    """The guard of a text: a short canonical string; equal guards are required for a semantic hit."""
    lowered = text.lower()
    numbers: set[str] = set()
    kinds: set[str] = set()
    negated = False
    for symbol, unit in (("$", "usd"), ("€", "eur"), ("£", "gbp"), ("%", "%"), ("°c", "celsius"),
                         ("°f", "fahrenheit")):
        if symbol in lowered:
            kinds.add("u:" + unit)
    for token in _WORD.findall(lowered):
        if token[0].isdigit():
            numbers.add(_number(token))
        elif token in _NUMBER_WORDS:
            numbers.add(_number(str(_NUMBER_WORDS[token])))
        elif token in _NEGATION or token.endswith("n't"):
            negated = True
        elif token in _LANGUAGES:
            kinds.add("l:" + _LANGUAGES[token])
        elif token in _UNITS:
            kinds.add("u:" + _UNITS[token])
    parts = sorted(numbers) + sorted(kinds) + (["!"] if negated else [])
    return " ".join(parts)
