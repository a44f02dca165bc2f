"""Per-language word handling for keyword search: stop words and Snowball stemmers.

Customers write in English, German, French, Spanish, Italian, Dutch and Portuguese; a
question says "Rücksendungen" where the policy says "Rücksendung", "reembolsos" where it
says "reembolso". Each text is stemmed with its own language's Snowball stemmer, so the
word forms meet. English keeps the light suffix stripper in `mailbot.kb.keyword`.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

# Languages with a stemmer and stop words here; any other text is treated as English.
STEMMED_LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt")

_SNOWBALL_NAMES = {
    "de": "german", "fr": "french", "es": "spanish", "it": "italian", "nl": "dutch",
    "pt": "portuguese",
}  # fmt: skip

# Function words, greetings and the filler of support questions in each language. The
# vectors read those; BM25 is there for the words that name something. Casefolded.
_STOP_TEXT = {
    "de": """aber alle allem allen aller alles als also am an ander andere anderen auch auf
        aus bei beim bin bis bitte bist da damit dann das dass dein deine dem den denn der des
        dich die dies diese diesem diesen dieser dir doch dort du durch ein eine einem einen
        einer eines er es etwas euch euer für gegen gibt hab habe haben hallo hat hatte hätte
        ich ihm ihn ihnen ihr ihre ihrem ihren ihrer im in ist ja jetzt kann kein keine können
        könnte man mein meine meinem meinen meiner mich mir mit muss möchte nach nicht noch nun
        nur ob oder ohne sehr sein seine sich sie sind so soll sollte sondern um und uns unser
        unsere unter viel vom von vor war waren warum was weil wenn wer werde werden wie wieder
        will wir wird wo wurde zu zum zur über danke dank bereits schon guten tag grüße gruß
        freundlichen liebe lieber sehr geehrte geehrter damen herren""",
    "fr": """à au aux avec avez avoir bonjour ce ceci cela ces cet cette chez comme comment
        dans de des du elle elles en est et été être eu il ils je la le les leur leurs lui ma
        mais me mes moi mon même ne ni nos notre nous on ont ou où par pas plus pour qu que
        quel quelle qui sa sans se ses si son sont sur ta te tes toi ton tu un une vos votre
        vous y merci madame monsieur cordialement svp plaît déjà encore aussi très peux pouvez
        pourriez voudrais aimerais fait faire""",
    "es": """a al algo alguna alguno ante con contra cual cuando de del desde donde dónde el
        él ella ellas ellos en entre era es esa ese eso esta está están este esto estoy fue ha
        han hay he la las le les lo los me mi mis muy más mí nada ni no nos nosotros o os otra
        otro para pero poco por porque que qué se sea ser si sí sin sobre son su sus también
        te tengo tiene tu tus tú un una uno unos usted ustedes vosotros y ya yo hola gracias
        saludos favor puede pueden podría quiero quisiera estimado estimada buenos días""",
    "it": """a ad al alla alle allo anche avete avere c che chi ci come con da dal dalla
        dei del della delle di dove e è gli ha hanno ho i il in io la le lei li lo loro lui ma
        me mi mia mie miei mio ne nei nel nella no noi non o per perché più può quale quando
        questa questo se si sia sono su sua sue suo suoi ti tra tu un una uno vi voi buongiorno
        salve grazie cordiali saluti gentile potete potreste vorrei già ancora molto""",
    "nl": """aan al alle als bij dan dat de der deze die dit doch door dus een en er ge geen
        had heb hebben heeft hem het hier hij hoe hun ik in is ja je jij jou jouw kan kon maar
        me meer men met mij mijn na naar niet niets nog nu of om omdat ons onze ook op over te
        tot u uw uit van veel voor want was wat we wel werd wie wij wil zal ze zich zij zijn zo
        zou hallo hoi beste dank bedankt groet groeten graag alvast vriendelijke kunt kunnen""",
    "pt": """a ao aos as às com como da das de dela dele do dos e é ela elas ele eles em
        entre era essa esse esta está estou eu foi há isso isto já la lhe mais mas me meu
        minha muito na não nas nem no nos nós o os ou para pela pelo por porque qual quando
        que se sem ser seu sua são também te tem tenho um uma você vocês olá obrigado obrigada
        favor bom dia boa tarde prezado prezada atenciosamente cumprimentos gostaria pode
        podem poderia quero ainda""",
}
STOPWORDS: dict[str, frozenset[str]] = {
    language: frozenset(text.split()) for language, text in _STOP_TEXT.items()
}

_lock = threading.Lock()
_stemmers: dict[str, Any] = {}


def _stemmer(language: str) -> Any:
    # Snowball stemmers keep state between calls, so one per language, used under a lock.
    with _lock:
        stemmer = _stemmers.get(language)
        if stemmer is None:
            import snowballstemmer

            stemmer = snowballstemmer.stemmer(_SNOWBALL_NAMES[language])
            _stemmers[language] = stemmer
        return stemmer


@functools.lru_cache(maxsize=131072)
def snowball_stem(word: str, language: str) -> str:
    """The Snowball stem of a casefolded word in German, French, Spanish, Italian, Dutch
    or Portuguese ("rücksendungen" -> "rucksend")."""
    stemmer = _stemmer(language)
    with _lock:
        return str(stemmer.stemWord(word))


def keyword_language(text: str, candidates: tuple[str, ...] = STEMMED_LANGUAGES) -> str:
    """The language a text's words are stemmed in: one of `candidates`, English if unsure."""
    from mailbot.classify.language import UNDETERMINED, detect_language

    if len(candidates) == 1:
        return candidates[0]
    language = detect_language(text, candidates)
    return "en" if language == UNDETERMINED else language
