"""Classify an inbound text message as an opt-out, an opt-in, a request for help, or anything else.

Every inbound message passes through here first, so the classifier is pure, table-driven and
precompiled: a `KeywordTable` turns its entries into two dictionaries and a few regular expressions
once, and `classify` then costs a handful of microseconds.

How a message is read
---------------------
The text is *normalised*: case folded, accents removed ("arrêt" -> "arret"), apostrophes and
masking characters dropped ("don't" -> "dont", "f**k" -> "fk", "opt-out" -> "optout"), every other
punctuation mark turned into a space, emoji kept as words of their own (without variation
selectors or skin tones). For matching, runs of a repeated character are then collapsed on both
sides ("STOPPPP" and "stooop" -> "stop"; the keyword "yes" has no run, "too" would become "to" on
both sides) and a word repeated back to back counts once ("stop stop stop", "🛑🛑🛑").

An entry of the table matches in one of two ways:

* **whole message** (the default): the message is the entry, possibly surrounded by courtesy
  words ("please", "thanks", "ok", "I want to", "por favor", "svp", ...) and by other keywords of
  any intent ("yes stop"). Messages longer than `MAX_WORDS` words never match this way, and a
  keyword used inside a sentence ("can you stop by at 5?") does not either.
* **anywhere** (the entry is written between "..."): the phrase may appear anywhere in a message
  of any length. Reserved for requests that cannot mean anything else ("stop texting me",
  "remove me from your list", "no me escriban más").

When several intents match, opt-out wins, then help, then opt-in (an ambiguous message must not
count as consent).

Entry syntax
------------
An entry is a word or phrase, with two optional pieces of syntax so one line covers its variants:
``(a|b|c)`` for one of several words, ``[a|b]`` for optional words. They nest. Example:
``"... (stop|quit) (texting|messaging) [me|us] ..."``. The same syntax serves the default table
and an org's additions.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .model import Intent, InvalidInput

MAX_WORDS = 12
"""Longest message (in distinct words) that can match an entry as a whole message."""

ANY_LANGUAGE = "*"
"""Language key for entries that belong to no language, such as emoji; they report language None."""

ANYWHERE_MARK = "..."

# Opt-out first: a message that asks to stop is honoured whatever else it says. Help beats opt-in
# because consent has to be unambiguous.
PRIORITY: tuple[Intent, ...] = (Intent.OPT_OUT, Intent.HELP, Intent.OPT_IN)

_INTENTS_BY_NAME = {intent.value: intent for intent in PRIORITY}
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8})*")


@dataclass(frozen=True)
class Classification:
    intent: Intent
    matched: str | None  # the keyword or phrase (normalised) that matched; None for OTHER
    language: str | None  # language of the matched entry; None for OTHER and emoji


OTHER = Classification(Intent.OTHER, None, None)


# --------------------------------------------------------------------------------------------
# The default table. Keys: language -> intent -> entries (see "Entry syntax" above).
# --------------------------------------------------------------------------------------------

_OPT_OUT_OBJECTS = "(me|us|this number|my number|my phone)"
_LIST = (
    "[your|ur|this|the|that|these|all|all your|all of your|any|any of your] "
    "[mailing|texting|text|sms|contact|call|calling|marketing|messaging|email|phone] "
    "(list|lists|contacts|database|system|records)"
)
_PROFANE = "(f|fk|fck|fuk|fuc|fuck|fu|fuq|fing|fking|fkn|fkin|fcking|fuking|fukin|fuckin|fucking)"

DEFAULT_ENTRIES: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "en": {
        "opt_out": (
            # The FCC's seven, the carriers' and the debt-collection product's keywords.
            "stop", "quit", "end", "revoke", "opt out", "cancel", "unsubscribe",
            "stopall", "stop all", "optout", "opt-out", "remove", "unsub",
            "delete", "go away", "leave", "cease", "block", "halt",
            f"{_PROFANE} (off|you|u|yourself)",
            # Short plain requests: whole message only.
            "(stop|quit|cease|end|halt) [all] [the|these|those|your|ur|all the|all these|all your] "
            "(texts|txts|text messages|messages|msgs|sms|calls|emails|notifications|alerts|reminders)",
            "(stop|quit|cease|halt) (texting|txting|messaging|msging|calling|contacting|emailing|sending"
            "|bothering|harassing|spamming|pestering) [me|us|this number|my number|my phone] "
            "[texts|messages|these]",
            "stop (it|this|that)",
            "(unsubscribe|unsub|remove|delete|erase|block) (me|us|my number|this number)",
            "take (me|us|my number|this number) off",
            "(remove|delete|erase|take) (me|us|my number|this number|my info|my information|my details) "
            f"(from|off|off of|out of) {_LIST}",
            "(be|get) removed [from " + _LIST + "]",
            "unsubscribe [me|us] from [your|ur|this|the|these|all|all your] "
            "[mailing|texting|text|sms|marketing|email] (list|lists|texts|messages|emails)",
            "(do not|dont|dnt|never|pls dont) (text|txt|message|msg|call|contact|email|sms|bother|write"
            "|write to) [me|us|this number|my number] [again|anymore|any more|ever again]",
            "no [more] (texts|txts|text messages|messages|msgs|sms|calls|emails|contact|texting"
            "|messaging|calling)",
            "cancel [my|the|all|these|all the|all my] (texts|messages|text messages|alerts|notifications"
            "|subscription|sms)",
            "(get lost|shut up|back off|buzz off|piss off|bugger off|sod off|foff)",
            "(lose|delete|forget|remove|erase) (my|this) (number|phone number|contact|contact info|email"
            "|info|information|details)",
            "[you have|youve got|you got|you have got|this is|its] [the|a] wrong (number|person|phone"
            "|phone number)",
            "[i] revoke [my|all] (consent|permission|authorization|authorisation)",
            "stop2quit",
            # Explicit requests: found anywhere, in a message of any length.
            "... (stop|quit|cease) (texting|txting|messaging|msging|contacting|bothering|harassing"
            f"|spamming|pestering) {_OPT_OUT_OBJECTS} ...",
            "... (stop|quit|cease) sending (me|us) (texts|messages|text messages|sms|these) ...",
            f"... (remove|delete|erase|take) (me|us|my number|this number) (from|off|off of|out of) {_LIST} ...",
            f"... (do not|dont|dnt|never) (text|txt|message|msg|contact|sms) {_OPT_OUT_OBJECTS} ...",
            "... (unsubscribe|unsub) me ...",
            "... opt (me|us|my number|this number) out ...",
            "... leave me alone ...",
            "... (lose|delete|erase|forget) my number ...",
            "... cease and desist ...",
            "... cease (all|any) (communication|communications|contact) ...",
            "... (i|we) (do not|dont) want (any|any more|anymore|more|your|these|those) "
            "(texts|messages|text messages|sms) ...",
            "... (i|we) revoke (my|our|all) consent ...",
            f"... {_PROFANE} off ...",
        ),
        "opt_in": ("yes", "start", "unstop", "opt in", "optin", "opt (me|us) in"),
        "help": (
            "help", "info", "help me", "[i|we] need help", "more (info|information)", "information",
        ),
    },
    "es": {
        "opt_out": (
            "alto", "para", "parar", "pare", "paren", "cancelar", "basta", "ya basta", "no más",
            "detener", "no más mensajes", "(darme|dame|denme|dar) de baja",
            "no [me] (mandes|manden|envíes|envíen|escribas|escriban|llames|llamen|contactes|contacten)"
            " [más] [mensajes]",
            "... no me (escribas|escriban|escriba|mandes|manden|mande|envíes|envíen|envíe|contactes"
            "|contacten|molestes|molesten) más ...",
            "... (deja|dejen|deje) de (escribirme|mandarme|enviarme|contactarme|molestarme) ...",
            "... (bórrame|bórrenme|sácame|sáquenme|quítame|quítenme|elimíname|elimínenme) de "
            "(la|su|tu|sus|tus|esta|esa) lista ...",
            "... no quiero [recibir] [más] (mensajes|textos|sms) ...",
        ),
        "opt_in": ("sí",),
        "help": ("ayuda", "necesito ayuda"),
    },
    "fr": {
        "opt_out": (
            "arrêt", "arrête", "arrêtez", "arrêter", "annuler", "désabonner", "me désabonner",
            "désinscrire", "plus de (messages|sms|textos)",
            "ne (m'appelez|m'appelle) plus",
            "... ne (m'envoyez|m'envoie|m'envoies|m'écrivez|m'écris|m'écrit|me contactez|me contacte"
            "|me textez|me texte) plus ...",
            "... (arrêtez|arrête|arrêtes) de (m'écrire|m'envoyer|me contacter|me texter|me harceler"
            "|me déranger) ...",
            "... (retirez|enlevez|supprimez|rayez|retire|enlève|supprime) moi de "
            "(la|votre|ta|cette|vos|tes) liste ...",
            "... (je veux|j'aimerais|je voudrais|je souhaite) me désabonner ...",
            "... (désabonnez|désinscrivez|désabonne|désinscris) moi ...",
            "... (laissez|laisse) moi tranquille ...",
        ),
        "opt_in": ("oui",),
        "help": ("aide", "j'ai besoin d'aide"),
    },
    ANY_LANGUAGE: {
        "opt_out": ("🛑", "🚫", "❌", "⛔", "🔕", "📴", "🖕"),
    },
}

# Words that may surround a whole-message entry without changing what it asks for.
COURTESY_WORDS: tuple[str, ...] = (
    "(please|pls|plz|plez|plse|kindly|now|right now|asap|immediately|already|again|anymore|any more"
    "|ever|for good|forever|just|and|seriously|sorry)",
    "(thanks|thank (you|u)|thx|thanx|tks|ty|ok|okay|k|kk|hi|hello|hey|dear|sir|maam|bye|goodbye)",
    "(i said|i told you|i already said)",
    "(i|we) (want|wish|need|would like|d like) to",
    "(id|i would|we would) like",
    "(can|could|would|will) (you|u) [please]",
    "(you can|you may|go ahead and)",
    "(por favor|porfa|porfavor|favor de|gracias|muchas gracias|hola|ya|ahora|ahora mismo|quiero)",
    "(s'il vous plaît|s'il te plaît|svp|stp|merci|merci beaucoup|bonjour|salut|maintenant|je veux)",
)

# Refusals that may precede or follow an opt-out ("no thanks, stop") but never count as consent.
REFUSAL_WORDS: tuple[str, ...] = (
    "(no|nope|nah|no thanks|no thank you|not interested|no gracias|non merci|non)",
)


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------

_DELETED = (
    "'’‘`´ʼ"  # apostrophes: "don't" -> "dont", "m'envoyez" -> "menvoyez"
    "*#@$%^~_-‐"  # masks and joiners: "f**k" -> "fk", "opt-out" -> "optout"
    "\u00ad\u200b\u200c\u200d\u2060\ufeff"  # soft hyphen, zero-width characters
)
_INVISIBLE_RANGES = (
    (0xFE00, 0xFE0F),  # variation selectors: "⛔️" -> "⛔"
    (0x1F3FB, 0x1F3FF),  # skin-tone modifiers: "🖕🏽" -> "🖕"
    (0x0300, 0x036F),  # combining marks left by NFKD: "é" -> "e"
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
)
# Letters and digits form words; each pictograph is a word of its own; everything else separates.
_WORDS = re.compile(r"[^\W_]+|[\u2190-\u2bff\U0001f000-\U0001faff]")
_RUNS = re.compile(r"(.)\1+")


class _Normaliser:
    """Turns text into lower-case, accent-free words separated by single spaces."""

    def __init__(self) -> None:
        deleted: dict[int, str | None] = {ord(c): None for c in _DELETED}
        for first, last in _INVISIBLE_RANGES:
            deleted.update(dict.fromkeys(range(first, last + 1)))
        self._unicode_table = deleted
        self._ascii_table: dict[int, str | None] = {}
        for code in range(128):
            char = chr(code)
            if code in deleted:
                self._ascii_table[code] = None
            else:
                self._ascii_table[code] = char.lower() if char.isalnum() else " "

    def __call__(self, text: str) -> str:
        if text.isascii():
            return " ".join(text.translate(self._ascii_table).split())
        folded = text.translate(self._unicode_table).casefold()
        decomposed = unicodedata.normalize("NFKD", folded).translate(self._unicode_table)
        return " ".join(_WORDS.findall(decomposed))


@functools.cache
def _normaliser() -> _Normaliser:
    return _Normaliser()


def normalise(text: str) -> str:
    """The form in which messages and entries are compared, before runs are collapsed."""
    return _normaliser()(text)


def _collapse(normalised: str) -> str:
    return _RUNS.sub(r"\1", normalised)


# --------------------------------------------------------------------------------------------
# Compiling entries
# --------------------------------------------------------------------------------------------

_SYNTAX = re.compile(r"[()\[\]|]|[^()\[\]|]+")


@dataclass(frozen=True)
class _CompiledEntry:
    source: str  # regex over collapsed words, each followed by one space
    plain: str | None  # the normalised entry when it has no syntax, for dictionary lookup
    anywhere: bool
    words: frozenset[str]  # collapsed words it uses


def _compile_entry(entry: object, where: str) -> _CompiledEntry:
    if not isinstance(entry, str):
        raise InvalidInput(f"{where}: entry {entry!r} is not text")
    text = entry.strip()
    if not text:
        raise InvalidInput(f"{where}: empty entry")
    starts, ends = text.startswith(("...", "…")), text.endswith(("...", "…"))
    if starts != ends or (starts and len(text.strip(".… ")) == 0):
        raise InvalidInput(
            f"{where}: entry {entry!r}: write '...' on both sides of a phrase that may appear anywhere"
        )
    if starts:
        text = text.strip(".… ")
    words: set[str] = set()
    parts = _SYNTAX.findall(text)
    try:
        source, end = _compile_alternatives(parts, 0, None, words)
    except ValueError as problem:
        raise InvalidInput(f"{where}: entry {entry!r}: {problem}") from None
    assert end == len(parts)
    if not words or re.fullmatch(source, ""):
        raise InvalidInput(f"{where}: entry {entry!r} needs at least one word that is not optional")
    plain = None if any(p in "()[]|" for p in parts) else normalise(text)
    return _CompiledEntry(source, plain, starts, frozenset(words))


def _compile_alternatives(
    parts: list[str], position: int, closer: str | None, words: set[str]
) -> tuple[str, int]:
    """Compile parts from `position` up to `closer` (or the end); return the regex and the next position."""
    alternatives: list[str] = [""]
    while position < len(parts):
        part = parts[position]
        position += 1
        if part == "|":
            if not alternatives[-1]:
                raise ValueError("empty alternative (use [...] for optional words)")
            alternatives.append("")
        elif part in ")]":
            if part != closer:
                raise ValueError(f"unexpected {part!r}")
            break
        elif part in "([":
            inner, position = _compile_alternatives(parts, position, ")" if part == "(" else "]", words)
            alternatives[-1] += f"(?:{inner})" + ("?" if part == "[" else "")
        else:
            for word in _collapse(normalise(part)).split():
                words.add(word)
                alternatives[-1] += re.escape(word) + " "
    else:
        if closer is not None:
            raise ValueError(f"missing {closer!r}")
    if not alternatives[-1]:
        raise ValueError("empty alternative (use [...] for optional words)")
    return "|".join(alternatives), position


def _group(sources: Iterable[str]) -> str:
    return "(?:" + "|".join(sources) + ")"


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


class KeywordTable:
    """An immutable, precompiled keyword table: the default one or an org's extension of it."""

    __slots__ = ("_canonical", "_entries", "_exact", "_languages", "_matchers", "_vocabulary")

    def __init__(self, entries: Mapping[str, Mapping[str, Iterable[str]]]) -> None:
        """Validate and compile `entries` (language -> intent name -> entries); InvalidInput if bad."""
        self._entries: dict[str, dict[Intent, tuple[str, ...]]] = _validated(entries)
        self._languages: list[str | None] = []  # regex group "l<i>" -> language of the entry
        self._exact: dict[str, Classification] = {}
        self._canonical: dict[str, str] = {}
        vocabulary: set[str] = set()
        compiled: dict[Intent, list[tuple[int, _CompiledEntry]]] = {intent: [] for intent in PRIORITY}
        for language, by_intent in self._entries.items():
            reported = None if language == ANY_LANGUAGE else language
            for intent in PRIORITY:
                if intent not in by_intent:
                    continue
                group = len(self._languages)
                self._languages.append(reported)
                for entry in by_intent[intent]:
                    item = _compile_entry(entry, f"keywords: {language}/{intent.value}")
                    compiled[intent].append((group, item))
                    vocabulary |= item.words
                    if item.plain is not None:
                        self._add_keyword(item.plain, Classification(intent, item.plain, reported))
        fillers = {intent: [_compile_entry(e, "courtesy words") for e in COURTESY_WORDS] for intent in PRIORITY}
        for intent in (Intent.OPT_OUT, Intent.HELP):
            fillers[intent] += [_compile_entry(e, "refusal words") for e in REFUSAL_WORDS]
        for items in fillers.values():
            for item in items:
                vocabulary |= item.words
        self._vocabulary = frozenset(vocabulary)
        any_entry = [item.source for items in compiled.values() for _, item in items]
        # Per intent, in priority order: the whole-message pattern and the anywhere pattern.
        self._matchers: list[tuple[Intent, re.Pattern[str] | None, re.Pattern[str] | None]] = []
        for intent in PRIORITY:
            surround = _group([f.source for f in fillers[intent]] + any_entry)
            whole_core = self._core(compiled[intent], anywhere_only=False)
            anywhere_core = self._core(compiled[intent], anywhere_only=True)
            self._matchers.append((
                intent,
                re.compile(f"^ {surround}*{whole_core}{surround}*$") if whole_core else None,
                re.compile(f" {anywhere_core}") if anywhere_core else None,
            ))

    @staticmethod
    def _core(items: list[tuple[int, _CompiledEntry]], anywhere_only: bool) -> str:
        """One named group per language block, so the match tells which language it was."""
        blocks: dict[int, list[str]] = {}
        for group, item in items:
            if item.anywhere or not anywhere_only:
                blocks.setdefault(group, []).append(item.source)
        return _group(f"(?P<l{group}>{'|'.join(sources)})" for group, sources in blocks.items()) if blocks else ""

    def _add_keyword(self, plain: str, result: Classification) -> None:
        collapsed = _collapse(plain)
        earlier = self._exact.get(collapsed)
        if earlier is not None and earlier.intent != result.intent:
            raise InvalidInput(
                f"{result.language or ANY_LANGUAGE}/{result.intent.value}: {plain!r} is already an "
                f"{earlier.intent.value} keyword ({earlier.language or ANY_LANGUAGE})"
            )
        if earlier is None:
            self._exact[collapsed] = result
            self._exact.setdefault(plain, result)
            self._canonical[collapsed] = plain

    @classmethod
    def default(cls) -> KeywordTable:
        """The built-in table (built on first use, then shared)."""
        return _default_table()

    def with_additions(self, additions: Mapping[str, Mapping[str, Iterable[str]]]) -> KeywordTable:
        """A new table with `additions` (language -> "opt_out"/"opt_in"/"help" -> entries) appended.

        This table is left as it was. Raises InvalidInput naming the bad language, intent or entry.
        """
        merged = {language: dict(by_intent) for language, by_intent in self._entries.items()}
        for language, by_intent in _validated(additions).items():
            target = merged.setdefault(language, {})
            for intent, entries in by_intent.items():
                known = target.get(intent, ())
                target[intent] = known + tuple(e for e in dict.fromkeys(entries) if e not in known)
        return KeywordTable(merged)

    def as_dict(self) -> dict[str, dict[str, list[str]]]:
        """The entries as written, for showing an org's settings (a fresh copy)."""
        return {
            language: {intent.value: list(entries) for intent, entries in by_intent.items()}
            for language, by_intent in self._entries.items()
        }

    def classify(self, text: str) -> Classification:
        normalised = normalise(text)
        found = self._exact.get(normalised)
        if found is not None:
            return found
        if not normalised:
            return OTHER
        words = _collapse(normalised).split(" ")
        distinct = [word for i, word in enumerate(words) if i == 0 or word != words[i - 1]]
        key = " ".join(distinct)
        found = self._exact.get(key)
        if found is not None:
            return found
        padded = f" {key} "
        whole = len(distinct) <= MAX_WORDS and self._vocabulary.issuperset(distinct)
        for intent, whole_pattern, anywhere_pattern in self._matchers:
            match = whole_pattern.match(padded) if whole and whole_pattern is not None else None
            if match is None and anywhere_pattern is not None:
                match = anywhere_pattern.search(padded)
            if match is not None:
                return self._result(intent, match, normalised, words)
        return OTHER

    def _result(self, intent: Intent, match: re.Match[str], normalised: str, words: list[str]) -> Classification:
        group = match.lastgroup
        assert group is not None  # every core alternative sits in a named language group
        span = match.group(group).strip()
        matched = self._canonical.get(span)
        if matched is None:
            # The padded text has one space before each distinct word: count them to find the first.
            first = match.string.count(" ", 0, match.start(group)) - 1
            matched = _original_words(normalised.split(" "), words, first, span.count(" ") + 1)
        return Classification(intent, matched, self._languages[int(group[1:])])


def _original_words(normalised_words: list[str], collapsed_words: list[str], first: int, count: int) -> str:
    """The normalised (not collapsed) words behind `count` distinct words matched from `first`.

    Matching sees the collapsed words without back-to-back repeats; the report shows the words as
    the customer wrote them ("stop texting me", not "stop texing me").
    """
    kept = [i for i, word in enumerate(collapsed_words) if i == 0 or word != collapsed_words[i - 1]]
    return " ".join(normalised_words[kept[first] : kept[first + count - 1] + 1])


def _validated(entries: Mapping[str, Mapping[str, Iterable[str]]]) -> dict[str, dict[Intent, tuple[str, ...]]]:
    """Check the shape, language codes and intent names of `entries`; entries themselves are checked
    when compiled."""
    if not isinstance(entries, Mapping):
        raise InvalidInput("keywords: expected a mapping of language -> intent -> words or phrases")
    result: dict[str, dict[Intent, tuple[str, ...]]] = {}
    for language, by_intent in entries.items():
        code = language.strip().lower() if isinstance(language, str) else ""
        if code != ANY_LANGUAGE and not _LANGUAGE_CODE.fullmatch(code):
            raise InvalidInput(
                f"keywords: {language!r} is not a language code such as 'en', 'es' or 'pt-br' "
                f"(or {ANY_LANGUAGE!r} for emoji and other words of no language)"
            )
        if not isinstance(by_intent, Mapping):
            raise InvalidInput(f"keywords: {code}: expected a mapping of intent -> words or phrases")
        for name, words in by_intent.items():
            intent = _INTENTS_BY_NAME.get(name) if isinstance(name, str) else None
            if intent is None:
                raise InvalidInput(f"keywords: {code}: unknown intent {name!r} (use opt_out, opt_in or help)")
            where = f"keywords: {code}/{intent.value}"
            if isinstance(words, str) or not isinstance(words, Iterable):
                raise InvalidInput(f"{where}: expected a list of words or phrases, got {words!r}")
            listed = tuple(words)
            for entry in listed:
                if not isinstance(entry, str):
                    raise InvalidInput(f"{where}: entry {entry!r} is not text")
            by_language = result.setdefault(code, {})
            by_language[intent] = by_language.get(intent, ()) + listed
    return result


@functools.cache
def _default_table() -> KeywordTable:
    return KeywordTable(DEFAULT_ENTRIES)


def classify(text: str, table: KeywordTable | None = None) -> Classification:
    """Classify one inbound message with `table`, or the default table."""
    return (KeywordTable.default() if table is None else table).classify(text)
