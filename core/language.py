"""Language processing for the offline engine and knowledge search: words to weighted, canonical terms.

A message becomes a list of :class:`Term` in five steps, all offline with data
shipped inside packages:

1. **words**: lower-cased, accents stripped, split into words (``hasn't`` stays one word);
2. **spelling**: a word neither in English (the frequency dictionary shipped with
   ``symspellpy``, 82,765 words) nor in the bot's own vocabulary (its intents'
   examples, the passages found, its taught synonyms) is corrected to the closest
   word of the bot's vocabulary, else of English (edit distance 1, 2 for words of
   six letters or more), so ``ordr`` becomes ``order`` and a product name the bot
   knows is never "corrected";
3. **synonyms**: phrases and words mapped to one canonical word (``send back`` →
   ``return``, ``guarantee`` → ``warranty``): :data:`SYNONYMS`, a curated English
   list of customer-service vocabulary, plus the synonyms a tenant taught its bot;
4. **stop words** dropped (articles, pronouns, auxiliaries, prepositions);
5. **stems** by the Snowball English stemmer (``PyStemmer``): ``refunds``,
   ``refunded``, ``refunding`` → ``refund``.

Each term carries a **weight** in (0, 1]: how informative the word is, from its
frequency in English (the same dictionary): ``order`` 0.52, ``paypal`` 0.73,
``cancel`` 0.86, a word English does not know 1.0. Coverage measures weigh terms
by it, so the rare words of a message decide what it is about.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import Stemmer

WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
TOTAL = 2.3e10
"""About the count of the commonest English word (``the``) in the frequency dictionary."""
UNKNOWN_WEIGHT = 1.0
SPELLING_WORDS = 30_000
"""The commonest English words the spelling corrector suggests (loading all 82,765 takes seconds)."""
MAX_SPELLED = 200
"""Only the first words of a text this long are spell-checked (a pasted document is not a question)."""
MAX_WORDS = 2000
"""A user's message is read up to this many words."""
MAX_WORD = 30
"""Longer "words" are never corrected."""
LONG_NUMBER = 4
"""Numbers of this many digits or more are identifiers (order numbers): one term :data:`NUMBER` for them all."""
NUMBER = "#number"
"""The term of an identifier-like number; an intent whose slot pattern matches the message covers it."""
NUMBER_WEIGHT = 0.8

STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "so",
        "than",
        "then",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "from",
        "with",
        "into",
        "onto",
        "about",
        "as",
        "i",
        "me",
        "my",
        "mine",
        "we",
        "us",
        "our",
        "you",
        "your",
        "yours",
        "he",
        "him",
        "his",
        "she",
        "her",
        "it",
        "its",
        "they",
        "them",
        "their",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "am",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "do",
        "does",
        "did",
        "doing",
        "have",
        "has",
        "had",
        "having",
        "can",
        "could",
        "would",
        "should",
        "shall",
        "will",
        "may",
        "might",
        "must",
        "please",
        "pls",
        "plz",
        "just",
        "also",
        "too",
        "very",
        "really",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "any",
        "some",
        "one",
        "ok",
        "okay",
        "oh",
        "well",
        "yes",
        "no",
        "question",
        "questions",
        "quick",
        "thing",
        "things",
        "know",
        "wondering",
        "wonder",
        "tell",
        "maybe",
        "actually",
    ]
)
"""Words dropped from terms. Question words (``where``, ``when``, ``how``) stay: they tell questions apart."""

SYNONYMS: dict[str, str] = {
    # shipping and delivery
    "deliver": "ship",
    "delivers": "ship",
    "delivered": "ship",
    "delivering": "ship",
    "delivery": "shipping",
    "deliveries": "shipping",
    "dispatch": "ship",
    "dispatched": "ship",
    "sent out": "shipped",
    "send out": "ship",
    "on its way": "shipped",
    "postage": "shipping cost",
    "abroad": "international",
    "overseas": "international",
    "internationally": "international",
    "uk": "united kingdom",
    "britain": "united kingdom",
    "great britain": "united kingdom",
    "england": "united kingdom",
    "usa": "united states",
    # member states of the European Union: a shop's shipping rules name the union, not each country
    "austria": "austria european union",
    "belgium": "belgium european union",
    "bulgaria": "bulgaria european union",
    "croatia": "croatia european union",
    "cyprus": "cyprus european union",
    "czechia": "czechia european union",
    "czech republic": "czech republic european union",
    "denmark": "denmark european union",
    "estonia": "estonia european union",
    "finland": "finland european union",
    "france": "france european union",
    "germany": "germany european union",
    "greece": "greece european union",
    "hungary": "hungary european union",
    "ireland": "ireland european union",
    "italy": "italy european union",
    "latvia": "latvia european union",
    "lithuania": "lithuania european union",
    "luxembourg": "luxembourg european union",
    "malta": "malta european union",
    "netherlands": "netherlands european union",
    "holland": "holland european union",
    "poland": "poland european union",
    "portugal": "portugal european union",
    "romania": "romania european union",
    "slovakia": "slovakia european union",
    "slovenia": "slovenia european union",
    "spain": "spain european union",
    "sweden": "sweden european union",
    "next day": "express",
    "overnight": "express",
    "fast shipping": "express",
    # orders
    "parcel": "package",
    "shipment": "package",
    "purchase": "order",
    "purchased": "ordered",
    "bought": "ordered",
    "tracking": "track",
    "whereabouts": "where",
    # money
    "how much": "cost",
    "price": "cost",
    "prices": "costs",
    "pricing": "cost",
    "fee": "cost",
    "fees": "costs",
    "costs": "cost",
    "money back": "refund",
    "reimburse": "refund",
    "reimbursement": "refund",
    "receipt": "invoice",
    "receipts": "invoices",
    "bill": "invoice",
    "amex": "american express",
    "mc": "mastercard",
    "master card": "mastercard",
    "pay pal": "paypal",
    "wire transfer": "bank transfer",
    "credit card": "card",
    "do you take": "accept",
    "ways to pay": "payment",
    "payment methods": "payment",
    "payment options": "payment",
    "debit card": "card",
    # returns
    "send back": "return",
    "send it back": "return it",
    "sending back": "return",
    "bring back": "return",
    "take back": "return",
    "give back": "return",
    "exchange": "return",
    "swap": "return",
    # warranty
    "guarantee": "warranty",
    "guaranteed": "warranty",
    "guarantees": "warranty",
    "warranted": "warranty",
    "broken": "defect",
    "broke": "defect",
    "faulty": "defective",
    "stopped working": "defect",
    "doesn't work": "defect",
    "does not work": "defect",
    "not working": "defect",
    "fix": "repair",
    # people
    "human": "person",
    "someone": "person",
    "somebody": "person",
    "representative": "agent",
    "operator": "agent",
    "staff": "team",
    "customer service": "agent",
    "customer support": "agent",
    # small talk
    "thx": "thanks",
    "thanx": "thanks",
    "ty": "thanks",
    "cheers": "thanks",
    "hiya": "hello",
    "howdy": "hello",
    "hey": "hello",
    "heya": "hello",
    "yo": "hello",
    "good evening": "good morning",
    "good afternoon": "good morning",
    "see ya": "see you",
    "cya": "see you",
    "have a good one": "have a nice day",
    "have a great day": "have a nice day",
    # time
    "how long": "time",
    "how fast": "time",
    "how quickly": "time",
    "how soon": "time",
    "when will": "time",
    "duration": "time",
    "period": "time",
    "where can i find": "where",
    "where do i find": "where",
    "is it possible to": "",
    "is it possible": "",
    "possible": "",
    "box": "packaging",
    "packing": "packaging",
    "u": "you",
    "ur": "your",
    "r": "are",
    # something did not arrive: the words of an order that is late
    "not come": "not received",
    "not came": "not received",
    "never came": "not received",
    "not arrived": "not received",
    "never arrived": "not received",
    "not shown up": "not received",
    "not showed up": "not received",
    "not turned up": "not received",
    "still waiting for": "not received",
    "waiting for": "not received",
    # money, subscriptions and opening times (round 3: general service vocabulary)
    "rate": "cost",
    "rates": "costs",
    "cheap": "cost",
    "cheaper": "cost",
    "cheapest": "cost",
    "expensive": "cost",
    "quit": "cancel",
    "terminate": "cancel",
    "termination": "cancellation",
    "suspend": "pause",
    "on hold": "pause",
    "how late": "close time",
    "how early": "open time",
    "address": "location",
    "located": "location",
    "directions": "location",
    "find you": "location",
    "get there": "location",
    "get here": "location",
    "getting there": "location",
    "getting here": "location",
    "newbie": "beginner",
    "newbies": "beginners",
    "novice": "beginner",
    "novices": "beginners",
    "first timer": "beginner",
    "first timers": "beginners",
    # round 6 (session 8): opening times, servicing and reservations in other words
    "shut": "close",
    "tune up": "service",
    "tuneup": "service",
    "hold": "reserve",
}
"""Curated English synonyms: a phrase or word (lower case) → the canonical words it means."""

EQUIVALENTS: tuple[tuple[str, ...], ...] = (
    ("schedule", "timetable"),
    ("weekend", "saturday", "sunday"),
    ("weekday", "monday", "friday"),
)
"""Words that each stand for the whole group, in a message and in a bot's text alike: ``weekend`` finds
``Saturday and Sunday``, ``timetable`` finds ``schedule`` and the other way round (the search query gets the
group's words too)."""
for _group in EQUIVALENTS:
    for _member in _group:
        SYNONYMS.setdefault(_member, " ".join(_group))
        SYNONYMS.setdefault(f"{_member}s", " ".join(_group))


def _word_list(text: str) -> list[str]:
    return text.split()


GOODS = _word_list(
    "jacket coat shirt tshirt blouse sweater jumper hoodie cardigan dress skirt trousers pants jeans shorts "
    "suit socks shoes shoe sneakers trainers boots sandals hat cap scarf gloves belt bag backpack handbag wallet purse "
    "watch ring necklace bracelet earrings sunglasses glasses umbrella lamp chair table desk sofa couch bed mattress "
    "pillow blanket towel curtain rug carpet shelf cabinet mirror vase mug cup plate bowl glass pan pot knife "
    "blender toaster kettle mixer microwave oven fridge freezer dishwasher vacuum iron heater fan grill "
    "phone smartphone laptop computer tablet monitor keyboard mouse printer headphones earphones earbuds speaker "
    "charger cable camera tv television console controller router drone toy puzzle doll bike bicycle helmet "
    "tent stroller"
)
"""Common goods: a message naming one speaks of an ``item`` (``can I send back a jacket?``)."""
for _good in dict.fromkeys(GOODS):
    SYNONYMS.setdefault(_good, f"{_good} item")
for _telephone in ("phone number", "phone numbers", "phone call", "phone calls", "by phone"):
    SYNONYMS.setdefault(_telephone, _telephone.replace("phone", "telephone"))
"""A phone number or call is a telephone's, not a good: ``do you have a phone number`` speaks of no item."""
QUANTITIES = ("a pair of", "a couple of", "a bunch of", "a lot of", "lots of", "plenty of")
"""How many, said in words (``a pair of shoes``): nothing of the topic, dropped like stop words."""
for _quantity in QUANTITIES:
    SYNONYMS.setdefault(_quantity, "")
SYNONYMS.setdefault("product", "item")  # one kind, counted once: a passage's "products" covers a message's "item"

GOOD_SET = frozenset(GOODS)
GOOD_KINDS = frozenset(["item", "product"])
FOREIGN_GOOD_WEIGHT = 0.2
"""A good the bot's texts never name (``shoes`` to a shop whose passages say ``item``) weighs this little: the
message speaks of an item, and a passage about items covers it. A good the bot names (its intents' examples,
its passages found) keeps its weight and is not an item: a gym's ``trainer`` is a person, a bike shop's
``bike`` is what it is about."""

COUNTRIES = _word_list(
    "norway switzerland iceland liechtenstein serbia albania bosnia montenegro macedonia moldova ukraine belarus "
    "russia turkey georgia armenia israel canada mexico brazil argentina chile colombia peru australia japan china "
    "india korea singapore thailand vietnam indonesia philippines malaysia egypt morocco nigeria kenya"
)
"""Countries outside the European Union, by their English names: a message naming one asks about a country."""
for _country in COUNTRIES:
    SYNONYMS.setdefault(_country, f"{_country} country")
KINDS = frozenset(["item", "product", "country"])
"""The words of what a thing is (a jacket is an item): they score a message, but a search is not widened by them
(a question about Australia's capital must not find every passage naming a country)."""
for _phrase, _canonical in list(SYNONYMS.items()):
    if _canonical.endswith("european union") and "country" not in _canonical:
        SYNONYMS[_phrase] = f"{_canonical} country"


@dataclass(frozen=True)
class Term:
    """One canonical, stemmed word of a text and how much it tells (0 < weight <= 1)."""

    stem: str
    weight: float


# ------------------------------------------------------------------------------ shipped data


class _English:
    """The English frequency dictionary and the spelling corrector over its commonest words (loaded once)."""

    def __init__(self) -> None:
        path = resources.files("symspellpy") / "frequency_dictionary_en_82_765.txt"
        self.frequency: dict[str, int] = {}
        with resources.as_file(path) as file, open(file, encoding="utf-8") as lines:
            for line in lines:
                word, _, count = line.partition(" ")
                self.frequency[word] = int(count)
        self._speller: Any = None
        self._lock = threading.Lock()

    def speller(self) -> Any:
        """The SymSpell corrector over the commonest :data:`SPELLING_WORDS` words (built on first use)."""
        if self._speller is None:
            with self._lock:
                if self._speller is None:
                    from symspellpy import SymSpell

                    speller = SymSpell(max_dictionary_edit_distance=2, prefix_length=5)
                    for index, (word, count) in enumerate(self.frequency.items()):
                        if index >= SPELLING_WORDS:
                            break
                        speller.create_dictionary_entry(word, count)
                    self._speller = speller
        return self._speller


@lru_cache(maxsize=1)
def english() -> _English:
    """The shared English data (loaded on first use, about 0.1 s; the corrector on first correction)."""
    return _English()


_stemmer = Stemmer.Stemmer("english")
_stem_lock = threading.Lock()


@lru_cache(maxsize=65_536)
def stem(word: str) -> str:
    """The Snowball English stem of ``word`` (``refunding`` → ``refund``)."""
    with _stem_lock:  # a PyStemmer stemmer is not thread-safe
        return str(_stemmer.stemWord(word))


INFLECTIONS = ("ing", "es", "ed", "s", "d")


@lru_cache(maxsize=65_536)
def derivation(word: str) -> str | None:
    """What ``word`` adds to its stem besides an inflection: ``directions`` ``ion``, ``direct`` and ``shutting`` none.

    ``None`` when the stem is not a prefix of the word (``happy``, ``happi``): not told.
    """
    root = stem(word)
    if not word.startswith(root):
        return None
    rest = word[len(root) :]
    for suffix in INFLECTIONS:
        if rest.endswith(suffix):
            rest = rest[: -len(suffix)]
            break
    if rest == "e" or (len(rest) == 1 and root and rest == root[-1]):
        return ""  # locate, shutting
    return rest


QUESTION_WORDS = frozenset(["where", "when", "how", "why", "whether"])
QUESTION_WEIGHT = 0.2
"""Question words tell questions apart but say little about the topic: they weigh this much."""
REQUEST_WORDS = frozenset(
    [
        "need",
        "needs",
        "want",
        "wants",
        "wanted",
        "like",
        "get",
        "got",
        "getting",
        "help",
        "something",
        "anything",
        "able",
        "try",
        "trying",
        "wanna",
        "let",
        "still",
        "yet",
        "now",
        "ask",
        "asking",
        "somewhere",
        "anywhere",
        "everywhere",
        "several",
    ]
)
"""The words of asking (``I need``, ``I'd like to``, ``something``) and of vagueness (``somewhere``, ``several``):
common in requests, saying nothing of the topic."""
REQUEST_WEIGHT = 0.15

PURCHASE_VERBS = frozenset(["ordered", "got", "gotten"])
"""The canonical verbs of having bought (``bought`` and ``purchased`` are ``ordered`` by :data:`SYNONYMS`)."""
THING_WORDS = frozenset(
    ["something", "anything", "everything", "thing", "things", "stuff", "one", "ones", "what", "items", "products"]
)
"""Words that stand for a thing without naming it, besides :data:`GOODS` and their kinds."""
PURCHASE_SUBJECTS = frozenset(["i", "we"])
PURCHASE_ADVERBS = frozenset(["have", "had", "just", "recently", "already"])
RELATIVES = frozenset(["that", "which"])
PURCHASE_CLAUSE_WEIGHT = REQUEST_WEIGHT
"""A purchase clause right after a thing (``an item I bought``, ``the jacket that I purchased``, ``something I
got``) says which thing, not what the message is about: its verb weighs this little, and so does the thing
when a vague word (``the stuff I bought``, ``an item I ordered``) rather than a named good."""


def purchase_clauses(found: list[str]) -> set[int]:
    """The positions in canonical words ``found`` that a purchase clause right after a thing makes light.

    ``return an item I bought`` (canonical ``item i ordered``): ``item`` and ``ordered``; ``I bought a jacket``
    and ``I ordered something``: none (no thing before the subject).
    """
    out: set[int] = set()
    for i, word in enumerate(found):
        if word not in PURCHASE_VERBS:
            continue
        j = i - 1
        while j >= 0 and found[j] in PURCHASE_ADVERBS:
            j -= 1
        if j < 1 or found[j] not in PURCHASE_SUBJECTS:
            continue
        j -= 1
        if found[j] in RELATIVES and j >= 1:
            j -= 1
        thing = found[j]
        if thing in THING_WORDS or thing in GOOD_KINDS:
            out.update((i, j))
        elif thing in GOOD_SET or thing.removesuffix("s") in GOOD_SET:
            out.add(i)  # a named good keeps its weight (a jacket is canonically ``jacket item``: the branch above)
    return out


@lru_cache(maxsize=65_536)
def weight(word: str) -> float:
    """How informative ``word`` is, in (0, 1]: from its frequency in English; unknown words 1."""
    if word in QUESTION_WORDS:
        return QUESTION_WEIGHT
    if word in REQUEST_WORDS:
        return REQUEST_WEIGHT
    count = english().frequency.get(word)
    if count is None:
        return UNKNOWN_WEIGHT
    return min(1.0, max(0.1, math.log10(TOTAL / count) / 3.5))


def normalize(text: str) -> str:
    """Lower-case ``text``, strip accents, and make apostrophes plain (``Café’s`` → ``cafe's``)."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.lower().replace("\u2019", "'"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


CONTRACTIONS = (
    ("won't", "will not"),
    ("can't", "can not"),
    ("n't", " not"),
    ("'m", " am"),
    ("'re", " are"),
    ("'ve", " have"),
    ("'ll", " will"),
    ("'d", " would"),
    ("what's", "what is"),
    ("where's", "where is"),
    ("when's", "when is"),
    ("how's", "how is"),
    ("who's", "who is"),
    ("it's", "it is"),
    ("that's", "that is"),
    ("there's", "there is"),
)


BARE_CONTRACTIONS = {
    "dont": "do not",
    "doesnt": "does not",
    "didnt": "did not",
    "hasnt": "has not",
    "havent": "have not",
    "hadnt": "had not",
    "isnt": "is not",
    "arent": "are not",
    "wasnt": "was not",
    "werent": "were not",
    "cant": "can not",
    "couldnt": "could not",
    "wont": "will not",
    "wouldnt": "would not",
    "shouldnt": "should not",
    "im": "i am",
    "ive": "i have",
    "whats": "what is",
    "wheres": "where is",
}
"""Contractions written without their apostrophe (``hasnt``), as people type them."""


COMPOUND = re.compile(r"\b[a-z]+(?:-[a-z]+)+\b")
"""A hyphenated compound of letters (``wi-fi``, ``no-show``, ``two-year``): its parts, then the parts written
together as one word."""


def _compound(match: re.Match[str]) -> str:
    whole = match.group(0)
    parts = [part for part in whole.split("-") if len(part) > 1]  # ``e-bike``, ``t-shirt``: no word ``e``, ``t``
    return " ".join([*parts, whole.replace("-", "")])


def words(text: str) -> list[str]:
    """The words of ``text``, normalised, contractions spelled out (``what's``, ``whats`` → ``what is``).

    A hyphenated compound is its parts and the parts written together (``Wi-Fi`` → ``wi fi wifi``), as
    people often type it; :meth:`Analyzer.canonical` also joins two words the bot knows as one (``wi fi``).
    """
    plain = normalize(text)
    if "-" in plain:
        plain = COMPOUND.sub(_compound, plain)
    if "'" in plain:
        for short, full in CONTRACTIONS:
            plain = plain.replace(short, full)
    found = WORD.findall(plain)
    if any(w in BARE_CONTRACTIONS for w in found):
        found = [part for w in found for part in BARE_CONTRACTIONS.get(w, w).split()]
    return found


# ------------------------------------------------------------------------------ the analyzer


class Analyzer:
    """Turns texts into :class:`Term` lists for one bot: its vocabulary and synonyms on top of English.

    ``vocabulary``: words the bot knows (never corrected, and preferred as
    corrections); ``synonyms``: the tenant's own phrase → canonical words, applied
    before (and winning over) :data:`SYNONYMS`.
    """

    def __init__(self, vocabulary: Iterable[str] = (), synonyms: Mapping[str, str] | None = None) -> None:
        taught = {" ".join(words(k)): " ".join(words(v)) for k, v in (synonyms or {}).items() if words(k)}
        self.synonyms = {**SYNONYMS, **taught}
        # Phrases match by their words' stems, so one entry covers every inflection (deliver, delivered,
        # delivering); the tenant's own entries come last, so they win over curated ones of the same stems.
        self.stemmed = {" ".join(stem(w) for w in k.split()): v for k, v in [*SYNONYMS.items(), *taught.items()]}
        self.forms: dict[str, set[tuple[str | None, ...]]] = {}
        """Each stemmed phrase → the :func:`derivation` of its entries' words (``directions``: ``ion``)."""
        for k in [*SYNONYMS, *taught]:
            self.forms.setdefault(" ".join(stem(w) for w in k.split()), set()).add(tuple(map(derivation, k.split())))
        table = self.synonyms
        self.longest = max((len(k.split()) for k in table), default=1)
        self.starts: dict[str, int] = {}
        """The first stem of each synonym phrase → the most words a phrase starting with it has."""
        for phrase in self.stemmed:
            first, *rest = phrase.split() or [""]
            self.starts[first] = max(self.starts.get(first, 0), 1 + len(rest))
        self.vocabulary = frozenset(w for text in vocabulary for w in words(text))
        self._domain: Any = None
        self._corrections: dict[str, str] = {}
        self._cache: dict[tuple[str, bool], tuple[Term, ...]] = {}

    def _domain_speller(self) -> Any:
        if self._domain is None:
            from symspellpy import SymSpell

            speller = SymSpell(max_dictionary_edit_distance=2, prefix_length=5)
            for word in self.vocabulary:
                if len(word) > 2 and not word.isdigit():
                    speller.create_dictionary_entry(word, english().frequency.get(word, 1000) + 1)
            self._domain = speller
        return self._domain

    def correct(self, word: str, keep: frozenset[str] = frozenset()) -> str:
        """``word``, or its correction when neither English, the bot's vocabulary nor ``keep`` knows it."""
        if len(word) < 3 or word.isdigit() or any(c.isdigit() for c in word):
            return word
        if word in self.vocabulary or word in keep or word in english().frequency or word in self.synonyms:
            return word
        known = self._corrections.get(word)
        if known is not None:
            return known
        from symspellpy import Verbosity

        if len(word) > MAX_WORD:  # no word is this long: leave it (and spare the corrector)
            return word
        distance = 2 if len(word) >= 6 else 1
        corrected = word
        for speller in (self._domain_speller(), english().speller()):
            found = speller.lookup(word, Verbosity.CLOSEST, max_edit_distance=distance)
            if found:
                corrected = str(found[0].term)
                break
        if len(self._corrections) > 10_000:
            self._corrections.clear()
        self._corrections[word] = corrected
        return corrected

    def join_compounds(self, found: list[str], keep: frozenset[str]) -> list[str]:
        """``found`` with two neighbouring words written as one where the bot knows them so (``wi fi`` → ``wifi``).

        Only compounds of the bot's own vocabulary and ``keep`` (its passages' words) are joined, never
        English at large: ``any time`` stays two words unless the bot writes ``anytime``.
        """
        out: list[str] = []
        i = 0
        while i < len(found):
            if i + 1 < len(found) and found[i].isalpha() and found[i + 1].isalpha():
                joined = found[i] + found[i + 1]
                if joined in self.vocabulary or joined in keep:
                    out.append(joined)
                    i += 2
                    continue
            out.append(found[i])
            i += 1
        return out

    def canonical(self, text: str, *, spell: bool = True, keep: frozenset[str] = frozenset()) -> list[str]:
        """The words of ``text`` spelled right (unless not ``spell``), synonyms replaced by their canonical words."""
        found = words(text)[:MAX_WORDS] if spell else words(text)
        if spell and len(found) > 1:
            found = self.join_compounds(found, keep)
        tokens = [self.correct(w, keep) for w in found[:MAX_SPELLED]] + found[MAX_SPELLED:] if spell else found
        stems = [stem(t) for t in tokens]
        out: list[str] = []
        i = 0
        while i < len(tokens):
            for size in range(min(self.starts.get(stems[i], 0), len(tokens) - i), 0, -1):
                phrase = " ".join(stems[i : i + size])
                canonical = self.stemmed.get(phrase)
                if canonical is not None and self.same_words(phrase, tokens[i : i + size]):
                    out.extend(canonical.split())
                    i += size
                    break
            else:
                out.append(tokens[i])
                i += 1
        return out

    def same_words(self, phrase: str, found: list[str]) -> bool:
        """Whether ``found`` (words whose stems are ``phrase``) are an entry's words, inflected at most.

        Stems alone join derived words: ``direct`` (of a direct debit) shares its stem with ``directions``
        (a location), ``terminal`` with ``terminate``. A word whose derivational ending differs from the
        entry's is another word; one whose ending the stem does not show (``happy``, ``happiness``) is not
        told apart.
        """
        mine = tuple(map(derivation, found))
        return any(
            all(a is None or b is None or a == b for a, b in zip(mine, entry, strict=True))
            for entry in self.forms.get(phrase, ())
        )

    def terms(self, text: str, *, spell: bool = True, keep: frozenset[str] = frozenset()) -> tuple[Term, ...]:
        """The weighted, stemmed content terms of ``text`` (each stem once, with its highest weight).

        ``spell``: correct misspelled words (a user's message), not a bot's own text;
        ``keep``: words never corrected besides the bot's vocabulary (the passages found).
        """
        key = (text, spell)
        cached = None if keep else self._cache.get(key)
        if cached is not None:
            return cached
        found: dict[str, float] = {}
        own = False
        canonical = self.canonical(text, spell=spell, keep=keep)
        asides = purchase_clauses(canonical)
        for index, word in enumerate(canonical):
            if word in STOP_WORDS or (own and word in GOOD_KINDS):
                continue  # a good the bot names is its own thing (a gym's trainer), not any item
            if word.isdigit() and len(word) >= LONG_NUMBER:
                found[NUMBER] = NUMBER_WEIGHT
                continue
            root = stem(word)
            value = 0.3 if word.isdigit() else weight(word)
            if word in GOOD_SET:
                own = self.names(word, keep)
                if not own:
                    value = min(value, FOREIGN_GOOD_WEIGHT)  # a jacket the bot never names: any item of its
            elif word not in GOOD_KINDS:
                own = False
            if index in asides:
                value = min(value, PURCHASE_CLAUSE_WEIGHT)
            if value > found.get(root, 0.0):
                found[root] = value
        result = tuple(Term(k, v) for k, v in found.items())
        if not keep:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = result
        return result

    def names(self, word: str, keep: frozenset[str] = frozenset()) -> bool:
        """Whether the bot's vocabulary or ``keep`` has ``word``, singular or plural (``towel``, ``towels``)."""
        forms = (word, f"{word}s", f"{word}es", word[:-1] if word.endswith("s") else word)
        return any(form in self.vocabulary or form in keep for form in forms)

    def expand(self, text: str) -> str:
        """``text`` followed by its corrected, canonical words that differ: a search query that finds both."""
        original = WORD.findall(normalize(text))  # as written: a compound's joined form (wifi) is new
        extra = [w for w in self.canonical(text) if w not in original and w not in KINDS]
        return text if not extra else f"{text} {' '.join(dict.fromkeys(extra))}"


def term_map(terms: Iterable[Term]) -> dict[str, float]:
    """``{stem: weight}`` of ``terms``."""
    return {t.stem: t.weight for t in terms}


def coverage(query: Mapping[str, float], other: Mapping[str, float] | frozenset[str] | set[str]) -> float:
    """The share of ``query``'s weight whose stems ``other`` has, in [0, 1] (0 for an empty query)."""
    total = sum(query.values())
    if not total:
        return 0.0
    return sum(w for s, w in query.items() if s in other) / total


@dataclass(frozen=True)
class Teaching:
    """What a tenant taught one bot: synonyms and extra examples per intent (``repositories/teaching.py``)."""

    revision: int = 0
    """Bumped by every change, so an engine rebuilds what it derived from the teaching only then."""
    synonyms: Mapping[str, str] = field(default_factory=dict)
    """Phrase (lower case) → the canonical words it means."""
    examples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Intent name → extra example messages."""


@lru_cache(maxsize=1)
def default_analyzer() -> Analyzer:
    """An analyzer with no bot vocabulary and the curated synonyms only (for knowledge search queries)."""
    return Analyzer()
