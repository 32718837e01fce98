"""Classify an inbound text message as an opt-out, an opt-in, a request for help, or anything else.

Every inbound message passes through here first, so the classifier is pure, table-driven and
precompiled: a `KeywordTable` turns its entries into a dictionary and regular expressions per
intent once, and `classify` then costs a few microseconds (docs/performance.md has the figures).

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

The default table holds, per language (English, Spanish, French, Portuguese), the providers'
keywords and a *phrase grammar*: anywhere entries for the ways people ask to stop (first person,
"I don't want these texts", "no deseo recibir más mensajes"; imperatives, "dejen de escribirme",
"parem de me enviar mensagens"; removal of the person or the number, "take my number off",
"elimine mi número", "tirem meu número"; "no more ...", "don't ... again", "never ...").

Three more rules, in this order, around the entries:

* **farewells** ("goodbye", "adiós", "tchau") opt out when they are the whole message, never
  when they close a conversation ("ok thanks, bye").
* **negatives** (`NEGATIVE_ENTRIES`): words that use an opt-out's words about something or someone
  else ("stop by", "don't stop", "stop my autopay", "cancel my appointment", the personal "a" in
  "no me manden más al técnico") are set aside before the entries are matched, so a request
  elsewhere in the same message still counts ("cancel my appointment and remove my number").
* **typos**: in a short message whose other words the table knows, a word it does not know is
  corrected to a nearby keyword of `TYPO_KEYWORDS` ("sotp", "unsubcribe", "cancle"), unless it is
  a real word (`typo_guard.REAL_WORDS`: "step", "shop", "quite").

When several intents match, opt-out wins, then help, then opt-in (an ambiguous message must not
count as consent). Erring on the side of honouring is the rule: a negative only sets aside the
words it names. Every result names its rule (`Classification.rule`), which goes into the ledger's
evidence with the matched words.

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
from dataclasses import dataclass, field, replace

from rapidfuzz.distance import OSA

from .model import Intent, InvalidInput
from .typo_guard import REAL_WORDS

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
    """What a message asks for, and why: the words that matched, their language and the rule.

    `rule` explains the decision (it is left out of equality, which compares what was decided):
    "keyword" (a plain entry of the table), "phrase:<entry as written>" (an entry with syntax, such
    as the phrase grammar), "farewell", "typo:<keyword>" (a misspelt keyword, `matched` shows the
    spelling), "negative:<entry>" (for OTHER: words about something else were set aside), or None
    when nothing matched.
    """

    intent: Intent
    matched: str | None  # the keyword or phrase (normalised) that matched; None for OTHER
    language: str | None  # language of the matched entry; None for OTHER and emoji
    rule: str | None = field(default=None, compare=False)

    def explanation(self) -> str:
        """One line for a ledger's evidence: the rule, the words and their language."""
        rule = self.rule or "none"
        if len(rule) > 160:
            rule = rule[:157] + "..."
        return f"{self.intent.value} by {rule}: {self.matched!r} ({self.language or 'no language'})"


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
_MESSAGES = (
    "[text|sms|email|marketing|promotional|automated|reminder|spam] (texts|txts|text messages|messages|msgs|sms"
    "|notifications|alerts|reminders|promotions|promos|ads|spam|emails|calls|updates|offers|deals|messaging)"
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
            # The shorthands of the providers' default lists.
            "stp", "td", "unsubscribe all", "cancel all", "end all", "quit all", "opt out all",
            "(unsubscribe|unsub|stop|cancel) [all] (texts|sms|msgs)",
            # The phrase grammar: the ways people ask to stop, anywhere in a message of any length.
            # Asking to be counted out, taken off, removed or deleted (the person or the number).
            "... count (me|us|my number|this number) out ...",
            "... (take|get) (my number|my phone number|this number|my phone|my cell|my contact) (off|out) ...",
            "... (take|get) (me|us) (off|out of|off of) " + _LIST + " ...",
            "... (remove|delete|erase|drop|lose) (my number|my phone number|this number|my phone|my contact"
            "|my contact info|my info|my information|my details|my name|me|us) (from|off|off of|out of) ...",
            "... (remove|delete|erase|drop|lose) (my number|my phone number|this number|my contact info) ...",
            "... (remove|delete) (me|us) [from this|from these|from your|now|please|asap|immediately] ...",
            "... put (me|us|my number|this number) on [your|the|a] (do not|dont) (call|text|contact) list ...",
            "... (do not|dont|no) (call|text|contact) list ...",
            # "No more ...", "don't ... again", "never ...": the object is messages or the person.
            "... no (more|longer|further) (texts|txts|text messages|messages|msgs|sms|calls|emails|texting"
            "|messaging|notifications|alerts|reminders|promotions|promos|ads|spam|contact) ...",
            "... (do not|dont|dnt|never|pls dont|please dont) [ever|again] (text|txt|message|msg|call|contact"
            "|sms|email|bother|write|write to|send texts to|send messages to) (me|us|this number|my number"
            "|my phone|this phone) ...",
            "... (do not|dont|never) (send|sending) (me|us|this number|my number) [any|any more|anymore|more"
            "|another|these|those|your|other] (texts|txts|text messages|messages|msgs|sms|notifications|alerts"
            "|reminders|promotions|promos|ads|spam|text|message) ...",
            "... (stop|quit|cease|end) (sending|send) [me|us] [any|these|those|your|the|all|all these|all your] "
            f"{_MESSAGES} ...",
            "... (stop|quit|cease|end) [all] [the|these|those|your|ur|all the|all these|all your|this|all of these"
            f"|all of your] {_MESSAGES} ...",
            "... (stop|quit) (texting|txting|messaging|spamming) ...",
            "... (stop|quit) (calling|texting|messaging|emailing) (and|or|n) (texting|calling|messaging|emailing) ...",
            "... (do not|dont|never) (call|text|message|email|contact) (or|and|nor|n) (text|call|message|email"
            "|contact) ...",
            "... (do not|dont|dnt|never) (text|message|reply|write|respond) [to me] back ...",
            "... (blocking|reporting) (you|this number|your number) ...",
            "... (stop|quit|cease) sending (me|us|this number|my number) (stuff|things|anything|crap|junk|garbage"
            "|this|that|it|them|more|spam|this stuff|this crap|this junk|that stuff|these things) ...",
            "... (im|i am|were|we are|i m) (done|finished|through) with (you|you guys|your company) ...",
            "... (im|i am|were|we are|i m) (done|finished|through) with (these|your|the|this|all|all these|all your"
            f"|all of these) {_MESSAGES} ...",
            f"... (make|get) [these|the|your|all these|all the|all your|this|all] {_MESSAGES} [to] (stop|end) ...",
            f"... (leave|let) (me|us) [the] [{_PROFANE}|hell|heck] (alone|be|in peace) ...",
            "... (get|be taken|be removed) (off|off of|out of|from) " + _LIST + " ...",
            "(i|we) (quit|cancel|unsubscribe|opt out|am out|m out|are out)", "stahp",
            "... (stop|quit|cease) (texting|txting|messaging|msging|contacting|spamming|harassing|bothering"
            "|calling) (this number|my number|this phone|my phone|my cell) ...",
            # First person: "I want out", "I don't want these", "I no longer wish to receive".
            "(i|we) (want|need|would like|wanna) out [now]",
            "... (i|we) (want|need|would like|wanna) out of (this|these|your|the|all|all these|all your) "
            f"({_MESSAGES}|list|lists|texting|program|thing|group) ...",
            "(remove|delete|erase) (it|that|this|this one)",
            "... (i|we) (do not|dont|no longer|dont ever|do not ever|never) (want|wish|need|care) "
            "[to receive|to get|to be getting|to keep getting|to keep receiving|to be sent] [these|your|any|more"
            f"|any more|anymore|any of these|any of your|those|such] {_MESSAGES} ...",
            "... (i|we) (do not|dont|no longer|dont ever|do not ever|never) (want|wish|need) (to be contacted"
            "|to be texted|to be messaged|to be called|any contact|to hear from you|contact) ...",
            "... (i|we) (want|wish|need|would like|wanna|am trying|m trying|have tried|ve tried|tried) to "
            "(opt out|optout|unsubscribe|unsub|be removed|be taken off|stop (receiving|getting) "
            "[these|your|the|any|text|sms]) ...",
            "... (stop|quit) (receiving|getting) [these|your|the|any|all|all these|all your|all of these] "
            "(texts|txts|text messages|messages|msgs|sms|notifications|alerts|reminders|promotions) ...",
            "(i|we) (never|did not|didnt|dont remember|do not remember) (signed|sign|signing) up [for this|for these"
            "|for any of this|for that]",
            "... (i|we) (never|did not|didnt|dont remember|do not remember) (signed|sign|signing) up (for|to) "
            f"(this|these|your|any|any of this|this stuff|{_MESSAGES}|this list|your list|texts from you) ...",
            "... (i|we) (never|did not|didnt) (agree|agreed|consent|consented|opt in|opted in|subscribe"
            "|subscribed|ask|asked) (to|for) (this|these|that|your|any|texts|messages) ...",
            "... (how|where) (do|can|would|should) (i|we) (opt out|unsubscribe|unsub|stop (these|the|your|this"
            "|all|getting|receiving)) ...",
            "... (unsubscribe|unsub|opt out|optout) (me|us|this number|my number|my phone) ...",
            "... (unsubscribe|unsub|opt out|optout) (from|of) (this|these|all|all your|all of your|all these"
            "|everything|it) ...",
            "... (unsubscribe|unsub|opt out|optout) (from|of) [the|your|ur] [text|sms|texting|mailing|marketing] "
            f"({_MESSAGES}|list|lists|program|programs|service) ...",
            "... wrong (number|person|phone number) ...",
            "... (im|i am|i will|ill|going to|gonna|about to) (block|blocking|report|reporting) "
            "(this number|your number|you|this|these texts) ...",
            "... (leave|let) (me|us) (alone|be|in peace) ...",
        ),
        "opt_in": (
            "yes", "y", "start", "unstop", "opt in", "optin", "opt (me|us) in", "join", "subscribe",
            "resubscribe", "resume", "begin", "continue", "restart", "sign me up", "subscribe me",
            "(start|resume|restart) [the|my|sending|sending me|sending the] (texts|messages|alerts|notifications)",
            "(i want|i would like|id like|please) to (subscribe|resubscribe|opt in|join)",
            "[yes] (opt|sign|add) (me|us) [back] (in|up)",
        ),
        "help": (
            "help", "info", "help me", "[i|we] need help", "more (info|information)", "information",
            "helpme", "support", "hlp",
        ),
    },
    "es": {
        "opt_out": (
            "alto", "para", "parar", "pare", "paren", "cancelar", "basta", "ya basta", "no más",
            "detener", "no más mensajes", "(darme|dame|denme|dar) de baja",
            "baja", "salir", "finalizar", "terminar", "desuscribir", "desuscribirme", "desuscribirse",
            "cancelar suscripción", "darse de baja", "fuera",
            "no [me] (mandes|manden|envíes|envíen|escribas|escriban|llames|llamen|contactes|contacten"
            "|molestes|molesten)"
            " [más] [mensajes]",
            "... no me (escribas|escriban|escriba|mandes|manden|mande|envíes|envíen|envíe|contactes"
            "|contacten|molestes|molesten) más ...",
            "... (deja|dejen|deje) de (escribirme|mandarme|enviarme|contactarme|molestarme) ...",
            "... (bórrame|bórrenme|sácame|sáquenme|quítame|quítenme|elimíname|elimínenme) de "
            "(la|su|tu|sus|tus|esta|esa) lista ...",
            "... no quiero [recibir] [más] (mensajes|textos|sms) ...",
            # The phrase grammar. "Ya no me manden textos", "no me vuelvan a escribir":
            "... [ya] no (me|nos) (mandes|manden|mande|envíes|envíen|envíe|escribas|escriban|escriba"
            "|textees|texteen|textee|llames|llamen|llame|contactes|contacten|contacte|molestes|molesten"
            "|moleste) [más|mas|nunca más] (mensajes|textos|sms|nada|mensajitos|notificaciones|promociones"
            "|publicidad|ningún mensaje) ...",
            "... [ya] no (me|nos) (vuelvan|vuelvas|vuelva) a (escribir|mandar|enviar|llamar|contactar"
            "|molestar|textear) ...",
            "... (no|nunca) (me|nos) (escriban|escribas|escriba|manden|mandes|mande|envíen|envíes|envíe"
            "|llamen|llames|llame|contacten|contactes|contacte|molesten|molestes|moleste) nunca [más] ...",
            # "Sáquenme de su lista", "elimine mi número":
            "... (bórrame|bórrenme|bórreme|sácame|sáquenme|sáqueme|quítame|quítenme|quíteme|elimíname"
            "|elimínenme|elimíneme|remuévanme|remuéveme|dénme|denme) (de|del) ...",
            "... (borra|borre|borren|saca|saque|saquen|quita|quite|quiten|elimina|elimine|eliminen|remueve"
            "|remueva|remuevan|retira|retire|retiren) (mi número|mi numero|mi teléfono|mi celular|mi contacto"
            "|mis datos|este número|mi nombre|mi cel) ...",
            "... (me|nos) (borren|borre|borra|saquen|saque|saca|quiten|quite|quita|eliminen|elimine|elimina"
            "|retiren|retire) de (la|su|tu|sus|tus|esta|esa|la lista|su lista) ...",
            # "No deseo recibir más mensajes", "quiero dejar de recibir textos":
            "... [ya] no (quiero|deseo|necesito|quisiera) [recibir|seguir recibiendo|recibir más|que me manden"
            "|que me envíen|que me escriban|más|mas] [más|mas|sus|estos|esos|ningún|ningun|otro|otros] "
            "(mensajes|mensaje|textos|texto|sms|notificaciones|alertas|promociones|publicidad|llamadas"
            "|correos) ...",
            "... (quiero|deseo|quisiera|necesito|me quiero|me gustaría) (dejar de recibir|cancelar|darme de baja"
            "|salir de (la|su|esta|sus|tu|esa) (lista|listas|base de datos|sistema|grupo|lista de contactos)"
            "|desuscribirme|desuscribir|que me (borren|saquen|quiten|eliminen)) ...",
            "[ya] no (quiero|deseo|queremos) (más|mas|nada|nada más)",
            "... (dejen|deje|deja|dejes|paren|pare|para|detengan|detenga) (de mandar|de enviar|de escribir"
            "|de textear|de mandarme|de enviarme|de escribirme|de llamarme|de contactarme|los mensajes"
            "|sus mensajes|estos mensajes|los textos|sus textos|de mandar mensajes|de enviar mensajes) ...",
            "... no más (mensajes|textos|sms|llamadas|notificaciones|promociones|publicidad) ...",
            "... basta [ya] de (mensajes|textos|sms|llamadas|notificaciones|promociones) ...",
            "... no se (molesten|moleste|molestes|preocupen) en (escribirme|mandarme|enviarme|contactarme"
            "|llamarme|escribir|mandar|enviar) ...",
            "... no (enviarme|mandarme|escribirme|contactarme|llamarme|molestarme|textearme) (más|mas|nada"
            "|mensajes|nunca) ...",
            "... no (me|nos) (llamen|llames|llame|escriban|escribas|escriba|manden|mandes|mande|envíen|envíes"
            "|envíe|contacten|contactes|contacte) (ni|y) [me|nos|tampoco] (llamen|llames|llame|escriban|escribas"
            "|escriba|manden|mandes|mande|envíen|envíes|envíe|contacten|contactes|contacte) ...",
            "... no (quiero|deseo|queremos) que (me|nos) (escriban|escribas|manden|mandes|envíen|envíes|llamen"
            "|contacten|molesten|sigan|vuelvan) ...",
            "... (eliminar|borrar|quitar|sacar|remover|retirar) (mi número|mi numero|mi teléfono|mi celular"
            "|mi contacto|mis datos|este número) ...",
            "... (cancelar|cancelen|cancela|cancele|cancelo) (mi suscripción|la suscripción|los mensajes"
            "|mis mensajes|las notificaciones|las alertas|los textos|el servicio de mensajes) ...",
            "... (darme|dame|denme|deme|me doy|me doy de|dar) de baja ...",
            "... (déjenme|déjame|déjeme|dejame|dejenme) en paz ...",
            "... (número|numero) equivocado ...",
            "... se equivocaron de (número|numero|persona) ...",
        ),
        "opt_in": (
            "sí", "alta", "darme de alta", "dar de alta", "suscribir", "suscribirme", "suscribirse",
            "iniciar", "comenzar", "reanudar", "continuar", "empezar", "unirme",
            "sí quiero", "sí acepto", "acepto",
        ),
        "help": ("ayuda", "necesito ayuda", "información", "más información"),
    },
    "fr": {
        "opt_out": (
            "arrêt", "arrête", "arrêtez", "arrêter", "annuler", "désabonner", "me désabonner",
            "désinscrire", "plus de (messages|sms|textos)",
            "ne (m'appelez|m'appelle) plus",
            "désabonnement", "désinscription", "fin", "stop svp",
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
            # The phrase grammar.
            "... (arrêtez|arrête|arrêtes|cessez|cesse|stoppez) (de m'écrire|de m'envoyer|de me contacter"
            "|de me texter|de m'appeler|de me harceler|de me déranger|d'envoyer|d'écrire|les messages|les sms"
            "|les textos|vos messages|vos sms|ces messages|ces sms|tout) ...",
            "... (retirez|enlevez|supprimez|effacez|rayez|ôtez|retire|enlève|supprime|efface|rayer|supprimer"
            "|retirer|effacer) (mon numéro|mon numero|mon nom|mes coordonnées|ce numéro|mon contact) ...",
            "... (retirez|enlevez|supprimez|effacez|rayez|retire|enlève|supprime|efface) moi (de|des|du) ...",
            "... (je|nous) ne (veux|veut|voulons|souhaite|souhaitons|désire) plus (recevoir|rien|être contacté"
            "|être contactée|aucun message|aucun sms|[de] (vos|ces) (messages|sms|textos|nouvelles|appels|courriels"
            "|mails)|de (messages|sms|textos|appels)) ...",
            "... (je|nous) (veux|voudrais|souhaite|aimerais|désire) (me désabonner|me désinscrire|ne plus "
            "recevoir|arrêter de recevoir|arrêter les messages|être retiré|être retirée|être désabonné) ...",
            "... (foutez|fichez|laissez) moi la paix ...",
            "... plus (jamais|aucun|de) (de messages|message|messages|sms|textos) ...",
            "... ne (me|m) (contactez|écrivez|envoyez|textez|appelez) plus ...",
            "... (mauvais|faux) numéro ...",
            "... me (désinscrire|désabonner|désinscrive|désabonne) ...",
            "... ne plus (être contacté|être contactée|être contactés|être dérangé|être dérangée|recevoir"
            "|avoir de messages) ...",
            "... erreur de numéro ...",
        ),
        "opt_in": (
            "oui", "abonner", "m'abonner", "s'abonner", "inscrire", "m'inscrire", "commencer",
            "démarrer", "reprendre", "oui svp", "j'accepte",
        ),
        "help": ("aide", "j'ai besoin d'aide", "renseignements"),
    },
    "pt": {
        "opt_out": (
            "parar", "pare", "parem", "sair", "encerrar", "cancelar inscrição", "descadastrar",
            "descadastre", "descadastrar me", "me descadastre", "me descadastrem", "chega", "já chega",
            "não quero mais", "nao quero mais", "sai fora", "sai", "cancela", "cancelem", "remover", "excluir",
            "(pare|parem|para) com (isso|isto|essas mensagens)",
            # The phrase grammar. "Por favor parem de me enviar mensagens", "para de me mandar mensagem":
            "... (parem|pare|para|parar|deixem|deixe|deixa|deixar) de [me|nos] (enviar|mandar|escrever"
            "|ligar|contactar|contatar|incomodar|encher|perturbar|chamar) ...",
            "... (parem|pare|para|parar|deixem|deixe) [com] (as|essas|estas|suas) (mensagens|sms|torpedos"
            "|notificações|ligações) ...",
            # "Tirem meu número", "me tira dessa lista":
            "... (tirem|tire|tira|retirem|retire|retira|removam|remova|remove|apaguem|apague|apaga|excluam"
            "|exclua|exclui|deletem|delete|deleta|descadastrem|descadastre|descadastra) [o] (meu número"
            "|meu numero|meu telefone|meu celular|meu contato|meus dados|meu nome|este número|esse número"
            "|este numero|esse numero) ...",
            "... (me|nos) (tirem|tire|tira|retirem|retire|removam|remova|remove|excluam|exclua|exclui"
            "|descadastrem|descadastre|descadastra|apaguem|apague|apaga|deletem|delete|deleta) (da|dessa|desta|do"
            "|dos|das|deste|desse|de sua|da sua|de seu|do seu|de vossa|de) ...",
            "(me|nos) (tirem|tire|tira|retirem|retire|removam|remova|remove|excluam|exclua|exclui|descadastrem"
            "|descadastre|descadastra|apaguem|apague|apaga)",
            "... (tirem|tire|tira|retirem|retire|removam|remova|excluam|exclua|descadastrem|descadastre) me (da"
            "|dessa|desta|do|dos|das|deste|desse|de sua|da sua|de) ...",
            "... (me|nos) (descadastrem|descadastre|descadastra|descadastrar) ...",
            # "Não me mandem mais nada", "não quero mais receber mensagens":
            "... (não|nao|nunca) (me|nos) (mandem|mande|manda|mandar|enviem|envie|envia|enviar|escrevam"
            "|escreva|escreve|liguem|ligue|liga|contatem|contate|contactem|contacte|perturbem|perturbe"
            "|incomodem|incomode) (mais|nunca|nada|mensagens|mensagem|sms) ...",
            "... (não|nao) (quero|desejo|preciso|gostaria de) [mais] [receber|continuar recebendo|ser"
            "|mais receber] [mais] (mensagens|mensagem|sms|torpedos|textos|nada|notificações|propaganda"
            "|publicidade|ligações|contatado|contactado|incomodado|essas mensagens|suas mensagens) ...",
            "... (quero|desejo|gostaria de|preciso) (sair (da|dessa|desta|do|deste|desse) (lista|grupo|cadastro"
            "|base)|cancelar|me descadastrar|descadastrar|ser removido"
            "|ser removida|parar de receber|deixar de receber|cancelar as mensagens|cancelar o recebimento) ...",
            "... (me|nos) (deixem|deixe|deixa) em paz ...",
            "... (deixem|deixe|deixa) me em paz ...",
            "... chega de (mensagens|mensagem|sms|torpedos|ligações) ...",
            "... (número|numero) errado ...",
            "... (me|nos) (descadastrar|remover|tirar|excluir|retirar) ...",
            "... (não|nao) (quero|desejo|preciso) [mais] [receber|continuar recebendo] [mais] (esses|essas|estes"
            "|estas|seus|suas|os|as) (mensagens|sms|torpedos|e mails|emails|email|textos|notificações"
            "|promoções|ligações) ...",
            "... (cancelar|cancelem|cancele|cancela) (a minha inscrição|minha inscrição|a inscrição"
            "|as mensagens|o recebimento|minha assinatura|a assinatura) ...",
        ),
        "opt_in": (
            "sim", "assinar", "iniciar", "começar", "retomar", "reiniciar", "quero receber",
            "aceito", "sim quero", "sim aceito", "inscrever", "me inscrever",
        ),
        "help": ("ajuda", "preciso de ajuda", "informação", "informações"),
    },
    ANY_LANGUAGE: {
        "opt_out": ("🛑", "🚫", "❌", "⛔", "🔕", "📴", "🖕"),
    },
}

# A plain farewell, alone, ends the conversation: an opt-out ("goodbye", "adiós"). Only the whole
# message counts: "ok thanks, bye" closes a chat with an agent and is no request to stop.
FAREWELLS: Mapping[str, tuple[str, ...]] = {
    "en": ("bye", "goodbye", "good bye", "bye bye", "farewell", "byebye", "goodbye forever"),
    "es": ("adiós", "adios", "chao", "chau", "hasta nunca", "hasta la vista"),
    "fr": ("au revoir", "adieu", "salut et adieu"),
    "pt": ("tchau", "adeus", "xau", "até nunca"),
}

# Negatives: words that use an opt-out's words about something or someone else ("stop by", "don't
# stop", "stop my autopay", "no me manden más al técnico"). Their words are taken out of the message
# before the opt-out entries are matched, so a request elsewhere in the same message still counts.
# Same syntax as the table; every negative may appear anywhere.
NEGATIVE_ENTRIES: Mapping[str, tuple[str, ...]] = {
    "en": (
        "stop (by|in|over|at the|at my|at your|on by|off at|off in|sign|light|signs|lights|watch|loss"
        "|gap|payment on|the bleeding)",
        "(do not|dont|did not|didnt|never|cannot|cant|can not|could not|couldnt|will not|wont|would not"
        "|wouldnt|should not|shouldnt|not|no need to|why did|why would|why did you|why) (stop|cancel|end|quit"
        "|remove|delete|block|leave|unsubscribe)",
        "(stop|cancel|end|quit|halt|pause|remove|delete|block) [my|the|a|this|that|our|your|his|her|their|these"
        "|those|all] [automatic|auto|monthly|recurring|next|last|late|current|scheduled] (payment|payments"
        "|autopay|auto pay|auto payment|pay|check|charge|charges|fee|fees|withdrawal|withdrawals|debit|debits"
        "|appointment|appointments|appt|visit|visits|order|orders|delivery|deliveries|plan|payment plan"
        "|service call|technician|tech|installer|driver|reservation|booking|meeting|job|card|account|transfer"
        "|transaction|prescription|refill|shipment|package|lease|loan|insurance|policy|trip|ride|class"
        "|lesson|session|tour|inspection|repair|work order|claim|dispute)",
        "(remove|take|delete) (me|us) (from|off) [the|my|this|that|your|tomorrows|fridays] (appointment|schedule"
        "|visit|waitlist|wait list|booking|reservation|class|roster|shift|meeting|call list for)",
        "(stop|quit|cease) (him|her|them|the technician|the tech|the driver|your technician|your driver) "
        "(from|coming|calling me|texting me)",
        "(end|start) of (the|this|next|last) (month|week|year|day|story|line)",
        "(is this|is that|was that|do i have|did i call|did i text|did i dial|have i got|i have|i called|i texted"
        "|i dialed|i used|maybe i have|sorry i have|i think i have) [the|a] wrong (number|phone number)",
        "(paper|mailed|printed|mail) (statements|statement|bills|bill|invoices|invoice|letters|copies|checks"
        "|catalogs|coupons)",
        "end of story",
        "(count|counting|counted) (me|us) in",
        "we (have|ve) got to stop",
        "(stop|stopping|stopped|stops) (this|the) (bill|law|war|project|pipeline|plan|proposal|measure"
        "|from passing)",
        "(if|when|until|before|after) (it|they|he|she|this|that) (stop|stops|stopped|end|ends|ended)",
        "(once|when|until|before|after) (the|my|your) (payment|payments|charges|calls|rain|work|pain) "
        "(stop|stops|end|ends|clears|is done)",
    ),
    "es": (
        # The personal "a": the verb is about a person ("no me manden más al técnico de ayer").
        "[ya] no (me|nos) (mandes|manden|mande|envíes|envíen|envíe|traigan|traiga) [más|mas] (a|al|a la"
        "|a los|a las|a ese|a esa|a este|a esta|a su|a tu) ",
        "(cancelar|cancelen|cancela|cancele|cancelo|parar|paren|pare|para|detener|detengan|detenga|suspender"
        "|suspendan|suspenda) (el|la|mi|los|las|mis|este|esta|ese|esa|su) [próximo|próxima|siguiente] (pago"
        "|pagos|cobro|cobros|cargo|cargos|cita|citas|visita|visitas|orden|pedido|pedidos|entrega|domiciliación"
        "|débito|transferencia|técnico|servicio técnico|reservación|reserva|plan de pagos|tarjeta|cuenta)",
        "para (qué|que|cuándo|cuando|mañana|hoy|mí|ti|usted|ustedes|nosotros|ver|pagar|saber|confirmar)",
        "(no|nunca) (pares|paren|pare|dejes|dejen|deje) de",
        # Things that are not messages: invoices on paper, visits, people.
        "[ya] no (me|nos) (mandes|manden|mande|envíes|envíen|envíe) [más|mas] (facturas|factura|recibos|recibo"
        "|estados de cuenta|cartas|carta|correspondencia|papeles|folletos|catálogos|paquetes|técnicos|vendedores"
        "|cobradores|empleados|gente|personas)",
        "(facturas|factura|recibos|recibo|estados de cuenta|cartas) en papel",
    ),
    "fr": (
        "(annuler|annulez|annule|arrêter|arrêtez|arrête|suspendre|suspendez) (le|la|mon|ma|mes|les|ce|cette) "
        "(paiement|prélèvement|prélèvements|rendez vous|rdv|visite|commande|livraison|virement|technicien"
        "|réservation|abonnement au journal)",
        "(n'arrêtez|n'arrête|n'annulez|n'annule) pas",
        "passer (me voir|nous voir|au bureau|demain)",
    ),
    "pt": (
        "(não|nao) (me|nos) (mandem|mande|manda|enviem|envie|envia) mais (o|a|os|as|aquele|aquela|esse|essa"
        "|este|esta) (técnico|tecnico|moço|moça|rapaz|entregador|motorista|funcionário|vendedor|pessoa)",
        "(cancelar|cancelem|cancele|cancela|parar|parem|pare|suspender|suspendam) (o|a|meu|minha|os|as|meus"
        "|minhas) [próximo|próxima] (pagamento|pagamentos|boleto|débito|cobrança|consulta|visita|pedido"
        "|entrega|agendamento|transferência|cartão|conta)",
        "(não|nao) (parem|pare|para|deixem|deixe) de",
        "para (que|quê|quando|amanhã|hoje|mim|você|vocês|nós|pagar|ver)",
    ),
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
    label: str  # the entry as written, without its "..." marks: the rule a match reports


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
    return _CompiledEntry(piece.source, piece.first, plain, starts, frozenset(words), " ".join(text.split()))


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
    """The compiled patterns of one intent, with the words a match must begin with (a cheap pre-check).

    The whole-message pattern tries the entries before the words around them (a lazy prefix: most
    messages are an entry and a courtesy word). The entries that may appear anywhere are grouped by
    the words they can begin with, so a message is searched only at its words that begin one, with
    only those entries: the leftmost match wins, then the first entry in the table's order, as a
    search of them all would choose.
    """

    intent: Intent
    whole: re.Pattern[str] | None
    whole_starts: frozenset[str]
    anywhere: Mapping[str, re.Pattern[str]]  # first word -> the anywhere entries that can begin with it

    @classmethod
    def build(cls, intent: Intent, entries: list[tuple[int, _CompiledEntry]], surround: str) -> _Matcher:
        by_first: dict[str, list[tuple[int, _CompiledEntry]]] = {}
        for index, entry in entries:
            if entry.anywhere:
                for word in entry.first:
                    by_first.setdefault(word, []).append((index, entry))
        return cls(
            intent,
            re.compile(f"^ {surround}*?{_core(entries)}{surround}*$") if entries else None,
            frozenset().union(*(entry.first for _, entry in entries)),
            {word: re.compile(_core(listed)) for word, listed in by_first.items()},
        )

    def search(self, padded: str, words: list[str]) -> re.Match[str] | None:
        """The leftmost match of an anywhere entry in `padded` (`words`, one space before each)."""
        position = 1
        for word in words:
            pattern = self.anywhere.get(word)
            if pattern is not None:
                match = pattern.match(padded, position)
                if match is not None:
                    return match
            position += len(word) + 1
        return None


def _core(entries: list[tuple[int, _CompiledEntry]]) -> str:
    """The entries, one named group each ("e<index>"), so a match tells which entry it was."""
    return _group(f"(?P<e{index}>{entry.source})" for index, entry in entries)


@dataclass(frozen=True)
class _Rule:
    """What a match of one entry reports besides its words."""

    language: str | None
    name: str  # "keyword" or "phrase:<entry>"


@dataclass(frozen=True)
class _Negatives:
    """The negative entries, compiled into one pattern searched anywhere in a message."""

    pattern: re.Pattern[str]
    starts: frozenset[str]
    rules: tuple[_Rule, ...]

    @classmethod
    def build(cls, entries: Mapping[str, Iterable[str]]) -> _Negatives:
        compiled: list[tuple[int, _CompiledEntry]] = []
        rules: list[_Rule] = []
        for language, listed in entries.items():
            for entry in listed:
                item = _compile_entry(f"... {entry} ...", f"keywords: negatives/{language}")
                compiled.append((len(rules), item))
                rules.append(_Rule(language, f"negative:{item.label}"))
        return cls(re.compile(f" {_core(compiled)}"), frozenset().union(*(e.first for _, e in compiled)),
                   tuple(rules))


_SENTENCE_ENDS = re.compile(r"[.!?;¿¡\n]+")
_SENTENCE_KEYWORDS = frozenset({
    "stop", "stopall", "stop all", "unsubscribe", "unsub", "optout", "opt out", "revoke", "arret", "arrete",
    "arretez", "alto", "detener", "desuscribir", "descadastrar", "pare", "parem", "paren",
})
"""A sentence of a longer message that is a phrase entry, or one of these keywords, on its own
("This isn't Karen. Please stop.", "Wrong number. Who is Maria?") is an opt-out. Not a keyword that
also ends other things ("I can't come tomorrow. Please cancel."), a farewell ("Thanks. Bye!") or a
misspelling."""

MASK = "_"
"""Stands in for a word that a negative set aside (normalised words never contain it)."""

TYPO_MAX_WORDS = 4
"""Longest message (in distinct words) in which a misspelt keyword is corrected."""

TYPO_KEYWORDS: tuple[str, ...] = (
    "stop", "stopall", "unsubscribe", "cancel", "quit", "optout", "revoke", "remove", "delete",
    "arrêt", "arrête", "arrêtez", "annuler", "désabonner", "désinscrire",
    "cancelar", "detener", "parar", "desuscribir", "descadastrar", "encerrar",
    "help", "ayuda", "aide", "ajuda",
)
"""The keywords a misspelling is corrected to: the short, common ones of the default table.

A word is corrected only when it is no word of the table, has at least four letters, is within
`typo_distance` edits of one of these (a swap of two neighbours is one edit: "sotp"), and is not a
real English, Spanish, French or Portuguese word (`typo_guard.REAL_WORDS`, made from word lists by
scripts/typo_guard.py): "step", "shop", "quite", "cancer", "parer" stay what they are."""


def typo_distance(word: str) -> int:
    """How many edits a word of this length may be away from the keyword it is corrected to."""
    return 1 if len(word) < 8 else 2


class KeywordTable:
    """An immutable, precompiled keyword table: the default one or an org's extension of it."""

    __slots__ = ("_canonical", "_entries", "_exact", "_matchers", "_negatives", "_rules", "_typos",
                 "_vocabulary")

    def __init__(self, entries: Mapping[str, Mapping[str, Iterable[str]]]) -> None:
        """Validate and compile `entries` (language -> intent name -> entries); InvalidInput if bad."""
        self._entries: dict[str, dict[Intent, tuple[str, ...]]] = _validated(entries)
        self._rules: list[_Rule] = []  # regex group "e<i>" -> what a match of that entry reports
        self._exact: dict[str, Classification] = {}
        self._canonical: dict[str, str] = {}
        vocabulary: set[str] = set()
        compiled: dict[Intent, list[tuple[int, _CompiledEntry]]] = {intent: [] for intent in PRIORITY}
        for language, by_intent in self._entries.items():
            reported = None if language == ANY_LANGUAGE else language
            for intent in PRIORITY:
                for entry in by_intent.get(intent, ()):
                    item = _compile_entry(entry, f"keywords: {language}/{intent.value}")
                    name = "keyword" if item.plain is not None else f"phrase:{item.label}"
                    compiled[intent].append((len(self._rules), item))
                    self._rules.append(_Rule(reported, name))
                    vocabulary |= item.words
                    if item.plain is not None:
                        self._add_keyword(item.plain, Classification(intent, item.plain, reported, "keyword"))
        for language, farewells in FAREWELLS.items():
            for farewell in farewells:
                plain = normalise(farewell)
                self._add_keyword(plain, Classification(Intent.OPT_OUT, plain, language, "farewell"))
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
        self._negatives = _negatives()
        self._typos = {_collapse(normalise(k)): self._exact[_collapse(normalise(k))] for k in TYPO_KEYWORDS
                       if _collapse(normalise(k)) in self._exact}

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
        found = self._exact.get(" ".join(distinct))
        if found is not None:
            return found
        if not distinct:
            return OTHER
        written = normalised.split()
        result, negative = self._match(distinct, written, kept)
        if result is not None:
            return result
        if negative is None and len(distinct) <= TYPO_MAX_WORDS:
            corrected = self._corrected(distinct, written, kept)
            if corrected is not None:
                return corrected
        sentences = [part for part in _SENTENCE_ENDS.split(text) if part.strip()]
        if len(sentences) > 1:
            for sentence in sentences:
                found = self.classify(sentence)
                if found.intent is Intent.OPT_OUT and found.rule is not None and (
                        found.rule.startswith("phrase:") or found.matched in _SENTENCE_KEYWORDS):
                    return found
        return negative or OTHER

    def _match(
        self, distinct: list[str], written: list[str], kept: list[int]
    ) -> tuple[Classification | None, Classification | None]:
        """The entries' verdict on these words, and the negative that set words aside, if one did."""
        negative = None
        if not self._negatives.starts.isdisjoint(distinct):
            padded = f" {' '.join(distinct)} "
            for found in self._negatives.pattern.finditer(padded):
                group = found.lastgroup
                assert group is not None
                first = padded.count(" ", 0, found.start(group)) - 1
                last = first + found.group(group).count(" ")
                if negative is None:
                    rule = self._negatives.rules[int(group[1:])]
                    words = " ".join(written[kept[i]] for i in range(first, last))
                    negative = Classification(Intent.OTHER, words, rule.language, rule.name)
                distinct = distinct[:first] + [MASK] * (last - first) + distinct[last:]
        padded = f" {' '.join(distinct)} "
        whole = len(distinct) <= MAX_WORDS and self._vocabulary.issuperset(distinct)
        for matcher in self._matchers:
            match = matcher.search(padded, distinct) if matcher.anywhere else None
            if match is None and whole and matcher.whole and not matcher.whole_starts.isdisjoint(distinct):
                match = matcher.whole.match(padded)
            if match is not None:
                return self._result(matcher.intent, match, written, kept), negative
        return None, negative

    def _corrected(self, distinct: list[str], written: list[str], kept: list[int]) -> Classification | None:
        """The verdict once misspelt keywords are corrected ("sotp" -> "stop"), if there are some.

        Every word the table does not know must be a correctable misspelling, so the corrected
        message is one the table knows as a whole ("unsubcribe pls"), never a sentence with a
        stray word that happens to be near a keyword.
        """
        corrected = list(distinct)
        keyword = None
        for i, word in enumerate(distinct):
            if word in self._vocabulary or word == MASK:
                continue
            if len(word) < 4 or not word.isalpha() or word in REAL_WORDS:
                return None
            best = min(self._typos, key=lambda k: OSA.distance(word, k, score_cutoff=2))
            if OSA.distance(word, best) > typo_distance(word):
                return None
            corrected[i] = keyword = best
        if keyword is None:
            return None
        result, _ = self._match(corrected, corrected, list(range(len(corrected))))
        if result is None:
            return None
        original = " ".join(written[kept[i]] for i, word in enumerate(corrected) if word != distinct[i])
        return replace(result, matched=original, rule=f"typo:{self._typos[keyword].matched}")

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

    def _result(self, intent: Intent, match: re.Match[str], written: list[str], kept: list[int]) -> Classification:
        """What matched: the table's keyword when the match is one, else the customer's words.

        Matching sees collapsed words; the report shows the words as written ("stop texting me",
        not "stop texing me"), from the first to the last matched word, without decoration.
        """
        group = match.lastgroup
        assert group is not None  # every core alternative is a named entry group
        rule = self._rules[int(group[1:])]
        span = match.group(group).strip()
        matched = self._canonical.get(span)
        if matched is None:
            # The padded text has one space before each word: count them to find the first.
            first = match.string.count(" ", 0, match.start(group)) - 1
            last = first + span.count(" ")
            shown = written[kept[first] : kept[last] + 1]
            matched = " ".join(word for word in shown if not self._decoration(word))
        return Classification(intent, matched, rule.language, rule.name)


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
def _negatives() -> _Negatives:
    return _Negatives.build(NEGATIVE_ENTRIES)


@functools.cache
def _default_table() -> KeywordTable:
    return KeywordTable(DEFAULT_ENTRIES)


def classify(text: str, table: KeywordTable | None = None) -> Classification:
    """Classify one inbound message with `table`, or the default table."""
    return (KeywordTable.default() if table is None else table).classify(text)
