"""Classify an inbound text message as an opt-out, an opt-in, a request for help, or anything else.

Every inbound message passes through here first, so the classifier is pure, table-driven and
precompiled: a `KeywordTable` turns its entries into a dictionary and two regular expressions per
intent once, and `classify` then costs a few microseconds.

How a message is read
---------------------
The text is *normalised*: case folded, accents removed ("arrêt" -> "arret"), apostrophes and
masking characters dropped ("don't" -> "dont", "f**k" -> "fk"), every other punctuation mark turned
into a space (hyphens too: "opt-out" -> "opt out", "retirez-moi" -> "retirez moi"), emoji kept as
words of their own, without variation selectors or skin tones. For matching, runs of a repeated
character are then collapsed on both sides ("STOPPPP" and "stooop" -> "stop"; the keyword "yes"
has no run, "too" would become "to" on both sides), a word repeated back to back counts once
("stop stop stop", "🛑🛑🛑"), and an emoji the table does not know is decoration ("stop 😡").

An entry of the table matches in one of two ways:

* **whole message** (the default): the message is the entry, possibly surrounded by courtesy
  words ("please", "thanks", "ok", "I want to", "por favor", "svp", ...), by refusals and
  questions around an opt-out ("no thanks", "who is this?", "how do I"), and by the plain
  keywords of any intent ("yes stop"). A keyword used inside a sentence ("can you stop by at 5?")
  does not match, nor does any message longer than `MAX_WORDS` words.
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

from optflow.domain.model import Intent, InvalidInput

MAX_WORDS = 12
"""Longest message (in distinct words) that can match an entry as a whole message."""

ANY_LANGUAGE = "*"
"""Language key for entries that belong to no language, such as emoji; they report language None."""

ANYWHERE_MARKS = ("...", "…")
"""Written on both sides of an entry that may appear anywhere in a message."""

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
    "(list|lists|contacts|database|system|records|group|group chat|chat|thread|conversation)"
)
_PROFANE = "(f|fk|fck|fuk|fuc|fuck|fu|fuq|fing|fking|fkn|fkin|fcking|fuking|fukin|fuckin|fucking)"

DEFAULT_ENTRIES: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "en": {
        "opt_out": (
            # The FCC's seven, the carriers' and the debt-collection product's keywords.
            "stop", "quit", "end", "revoke", "opt out", "cancel", "unsubscribe",
            "stopall", "stop all", "optout", "opt-out", "remove", "unsub",
            "delete", "go away", "leave", "cease", "block", "halt", "enough", "no more",
            f"{_PROFANE} (off|you|u|yourself)",
            # Short plain requests: whole message only.
            "(stop|quit|cease|end|halt) [all] [the|these|those|your|ur|all the|all these|all your] "
            "(texts|txts|text messages|messages|msgs|sms|calls|emails|notifications|alerts|reminders)",
            "(stop|quit|cease|halt) (texting|txting|messaging|msging|calling|contacting|emailing|sending"
            "|bothering|harassing|spamming|pestering) [me|us|this number|my number|my phone] "
            "[texts|messages|these]",
            "stop (it|this|that)",
            "(unsubscribe|unsub|remove|delete|erase|block) (me|us|my number|this number)",
            "(opt out|optout|unsubscribe|unsub) (of|from) [all|these|the|your|this] "
            "(texts|messages|text messages|sms|calls|emails|list|alerts|notifications)",
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
            "... (remove|delete|erase|take) (me|us|my number|this number) (from|off|off of|out of) "
            f"{_LIST} ...",
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
            "no [me] (mandes|manden|envíes|envíen|escribas|escriban|llames|llamen|contactes|contacten"
            "|molestes|molesten)"
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
            "... ne plus (m'envoyer|m'écrire|me contacter|me texter|me déranger) ...",
            "... ne veux plus [recevoir] (de|vos|ces) (messages|sms|textos) ...",
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
    "|ever|for good|forever|just|and|but|seriously|sorry)",
    "(thanks|thank (you|u)|thx|thanx|tks|ty|ok|okay|k|kk|hi|hello|hey|dear|sir|maam|bye|goodbye)",
    "have a (nice|good|great) (day|one|evening|weekend)",
    "(i said|i told you|i already said)",
    "(i|we) (want|wish|need|would like) to",
    "(id|wed) like to",
    "(i|we) wanna",
    "(can|could|would|will) (you|u) [please]",
    "(you can|you may|go ahead and)",
    "(por favor|porfa|porfavor|favor de|gracias|muchas gracias|hola|ya|ahora|ahora mismo|quiero)",
    "(s'il vous plaît|s'il te plaît|svp|stp|merci|merci beaucoup|bonjour|salut|maintenant|je veux)",
)

# Words that may surround an opt-out or a request for help ("no thanks, stop", "who is this? stop",
# "how do I unsubscribe?") but never consent.
REFUSALS_AND_QUESTIONS: tuple[str, ...] = (
    "(no|nope|nah|no thanks|no thank you|not interested|no gracias|non merci|non)",
    "(who is this|who are you|whos this|how (do|can) (i|we)|how to)",
)


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------

_DELETED = (
    "'’‘`´ʼ"  # apostrophes: "don't" -> "dont", "m'envoyez" -> "menvoyez"
    "*#@$%^~_"  # masking characters: "f**k" -> "fk", "f#@% off" -> "f off"
    "\u00ad\u200b\u200c\u200d\u2060\ufeff"  # soft hyphen, zero-width characters
)
_DROPPED_RANGES = (
    (0xFE00, 0xFE0F),  # variation selectors: "⛔️" -> "⛔"
    (0x1F3FB, 0x1F3FF),  # skin-tone modifiers: "🖕🏽" -> "🖕"
    (0x0300, 0x036F),  # combining marks left by NFKD: "é" -> "e"
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
)
# Letters and digits form words; each pictograph is a word of its own; everything else separates.
_PICTOGRAPHS = "\u2190-\u2bff\U0001f000-\U0001faff"  # arrows, symbols, dingbats, emoji
_WORDS = re.compile(rf"[^\W_]+|[{_PICTOGRAPHS}]")
_PICTOGRAPH = re.compile(rf"[{_PICTOGRAPHS}]")
_REPEATED = re.compile(r"(.)(?=\1)")  # a character the same character follows


class _Normaliser:
    """Turns text into lower-case, accent-free words separated by single spaces."""

    def __init__(self) -> None:
        deleted: dict[int, str | None] = {ord(c): None for c in _DELETED}
        for first, last in _DROPPED_RANGES:
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
    return _REPEATED.sub("", normalised)


# --------------------------------------------------------------------------------------------
# Compiling entries
# --------------------------------------------------------------------------------------------

_SYNTAX = re.compile(r"[()\[\]|]|[^()\[\]|]+")


@dataclass(frozen=True)
class _Piece:
    """Part of a compiled entry: a regex over collapsed words, each followed by one space."""

    source: str
    first: frozenset[str]  # the words it can begin with
    optional: bool  # whether it can match no word at all


@dataclass(frozen=True)
class _CompiledEntry:
    """One entry of the table, ready to be joined into its intent's patterns."""

    source: str
    first: frozenset[str]
    plain: str | None  # the normalised entry when it has no syntax, for dictionary lookup
    anywhere: bool
    words: frozenset[str]  # collapsed words it uses


def _compile_entry(entry: str, where: str) -> _CompiledEntry:
    text = entry.strip()
    if not text:
        raise InvalidInput(f"{where}: empty entry")
    starts, ends = text.startswith(ANYWHERE_MARKS), text.endswith(ANYWHERE_MARKS)
    anywhere_text = text.strip(".… ")
    if starts != ends or (starts and not anywhere_text):
        raise InvalidInput(
            f"{where}: entry {entry!r}: write '...' on both sides of a phrase that may appear anywhere"
        )
    if starts:
        text = anywhere_text
    parts = _SYNTAX.findall(text)
    if not normalise(" ".join(part for part in parts if part not in "()[]|")):
        raise InvalidInput(f"{where}: entry {entry!r} needs at least one word that is not optional")
    words: set[str] = set()
    try:
        piece, _ = _parse(parts, 0, None, words)
    except ValueError as problem:
        raise InvalidInput(f"{where}: entry {entry!r}: {problem}") from None
    if piece.optional:
        raise InvalidInput(f"{where}: entry {entry!r} needs at least one word that is not optional")
    plain = None if any(p in "()[]|" for p in parts) else normalise(text)
    return _CompiledEntry(piece.source, piece.first, plain, starts, frozenset(words))


def _parse(parts: list[str], position: int, closer: str | None, words: set[str]) -> tuple[_Piece, int]:
    """Compile `parts` from `position` up to `closer` (or the end); return it and the next position."""
    alternatives: list[_Piece] = []
    pieces: list[_Piece] = []

    def close_alternative() -> None:
        if not pieces:
            raise ValueError("empty alternative (use [...] for optional words)")
        alternatives.append(_sequence(pieces))
        pieces.clear()

    while position < len(parts):
        part = parts[position]
        position += 1
        if part == "|":
            close_alternative()
        elif part in ")]":
            if part != closer:
                raise ValueError(f"unexpected {part!r}")
            close_alternative()
            return _choice(alternatives, optional=part == "]"), position
        elif part in "([":
            inner, position = _parse(parts, position, ")" if part == "(" else "]", words)
            pieces.append(inner)
        else:
            chunk = _collapse(normalise(part)).split()
            if chunk:
                words.update(chunk)
                source = "".join(re.escape(word) + " " for word in chunk)
                pieces.append(_Piece(source, frozenset(chunk[:1]), optional=False))
    if closer is not None:
        raise ValueError(f"missing {closer!r}")
    close_alternative()
    return _choice(alternatives, optional=False), position


def _sequence(pieces: list[_Piece]) -> _Piece:
    first: set[str] = set()
    optional = True
    for piece in pieces:
        if optional:
            first |= piece.first
        optional = optional and piece.optional
    return _Piece("".join(piece.source for piece in pieces), frozenset(first), optional)


def _choice(alternatives: list[_Piece], optional: bool) -> _Piece:
    if len(alternatives) == 1 and not optional:
        return alternatives[0]
    source = _group(a.source for a in alternatives) + ("?" if optional else "")
    first = frozenset().union(*(a.first for a in alternatives))
    return _Piece(source, first, optional or any(a.optional for a in alternatives))


def _group(sources: Iterable[str]) -> str:
    return "(?:" + "|".join(sources) + ")"


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Matcher:
    """The compiled patterns of one intent, with the words a match must begin with (a cheap pre-check)."""

    intent: Intent
    whole: re.Pattern[str] | None
    whole_starts: frozenset[str]
    anywhere: re.Pattern[str] | None
    anywhere_starts: frozenset[str]

    @classmethod
    def build(cls, intent: Intent, entries: list[tuple[int, _CompiledEntry]], surround: str) -> _Matcher:
        anywhere = [(group, entry) for group, entry in entries if entry.anywhere]
        whole_core, anywhere_core = _core(entries), _core(anywhere)
        return cls(
            intent,
            re.compile(f"^ {surround}*{whole_core}{surround}*$") if entries else None,
            frozenset().union(*(entry.first for _, entry in entries)),
            re.compile(f" {anywhere_core}") if anywhere else None,
            frozenset().union(*(entry.first for _, entry in anywhere)),
        )


def _core(entries: list[tuple[int, _CompiledEntry]]) -> str:
    """The entries, one named group per language block, so a match tells which language it was."""
    blocks: dict[int, list[str]] = {}
    for group, entry in entries:
        blocks.setdefault(group, []).append(entry.source)
    return _group(f"(?P<l{group}>{'|'.join(sources)})" for group, sources in blocks.items())


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
        courtesy = [_compile_entry(entry, "keywords: courtesy words") for entry in COURTESY_WORDS]
        refusals = [_compile_entry(entry, "keywords: refusals") for entry in REFUSALS_AND_QUESTIONS]
        fillers = {intent: courtesy + (refusals if intent != Intent.OPT_IN else []) for intent in PRIORITY}
        for items in fillers.values():
            for item in items:
                vocabulary |= item.words
        self._vocabulary = frozenset(vocabulary)
        # Around a whole-message entry: courtesy words and the plain keywords of every intent.
        keywords = [item.source for items in compiled.values() for _, item in items if item.plain is not None]
        self._matchers = [
            _Matcher.build(intent, compiled[intent], _group([f.source for f in fillers[intent]] + keywords))
            for intent in PRIORITY
        ]

    def _add_keyword(self, plain: str, result: Classification) -> None:
        collapsed = _collapse(plain)
        earlier = self._exact.get(collapsed)
        if earlier is not None and earlier.intent != result.intent:
            raise InvalidInput(
                f"keywords: {result.language or ANY_LANGUAGE}/{result.intent.value}: {plain!r} is already "
                f"a keyword for {earlier.intent.value} ({earlier.language or ANY_LANGUAGE})"
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
        merged = {
            language: {intent.value: entries for intent, entries in by_intent.items()}
            for language, by_intent in self._entries.items()
        }
        for language, by_intent in _validated(additions).items():
            target = merged.setdefault(language, {})
            for intent, entries in by_intent.items():
                known = target.get(intent.value, ())
                target[intent.value] = known + tuple(e for e in dict.fromkeys(entries) if e not in known)
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
        words = _collapse(normalised).split()
        kept = self._significant(words, normalised.isascii())
        distinct = [words[i] for i in kept]
        key = " ".join(distinct)
        found = self._exact.get(key)
        if found is not None:
            return found
        if not distinct:
            return OTHER
        padded = f" {key} "
        whole = len(distinct) <= MAX_WORDS and self._vocabulary.issuperset(distinct)
        for matcher in self._matchers:
            match = None
            if whole and matcher.whole and not matcher.whole_starts.isdisjoint(distinct):
                match = matcher.whole.match(padded)
            if match is None and matcher.anywhere and not matcher.anywhere_starts.isdisjoint(distinct):
                match = matcher.anywhere.search(padded)
            if match is not None:
                return self._result(matcher.intent, match, normalised.split(), kept)
        return OTHER

    def _significant(self, words: list[str], plain_text: bool) -> list[int]:
        """The indexes of the words that matching looks at.

        A word repeated back to back counts once ("stop stop", "🛑🛑"), and a pictograph the table
        does not know is decoration ("stop 😡", "🙏 please stop").
        """
        if plain_text:
            return [i for i in range(len(words)) if i == 0 or words[i] != words[i - 1]]
        kept: list[int] = []
        for i, word in enumerate(words):
            if not self._decoration(word) and (not kept or word != words[kept[-1]]):
                kept.append(i)
        return kept

    def _decoration(self, word: str) -> bool:
        return word not in self._vocabulary and _PICTOGRAPH.fullmatch(word) is not None

    def _result(
        self, intent: Intent, match: re.Match[str], normalised_words: list[str], kept: list[int]
    ) -> Classification:
        """What matched: the table's keyword when the match is one, else the customer's words.

        Matching sees collapsed words; the report shows the words as written ("stop texting me",
        not "stop texing me"), from the first to the last matched word, without decoration.
        """
        group = match.lastgroup
        assert group is not None  # every core alternative sits in a named language group
        span = match.group(group).strip()
        matched = self._canonical.get(span)
        if matched is None:
            # The padded text has one space before each word: count them to find the first.
            first = match.string.count(" ", 0, match.start(group)) - 1
            last = first + span.count(" ")
            written = normalised_words[kept[first] : kept[last] + 1]
            matched = " ".join(word for word in written if not self._decoration(word))
        return Classification(intent, matched, self._languages[int(group[1:])])


def _validated(
    entries: Mapping[str, Mapping[str, Iterable[str]]],
) -> dict[str, dict[Intent, tuple[str, ...]]]:
    """Check the shape, language codes and intent names of `entries` (entries are checked when compiled)."""
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
