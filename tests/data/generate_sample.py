"""Writes `sample.txt`: the shipped English text sample for the `text` task (no download needed).

The text is procedural prose from a small phrase grammar over a few hundred words, interleaved with a few
handwritten paragraphs, so it has real structure to learn at every level a small model can reach: spelling,
common words, agreement of articles and nouns, punctuation, sentence and paragraph shape. Deterministic:
`python tests/data/generate_sample.py` rewrites the same file (composer/data/sample.txt), and
tests/test_text_task.py holds the two equal.
"""

from __future__ import annotations

import random
from pathlib import Path

TARGET_BYTES = 320_000

WRITTEN = [
    "The river runs past the old mill and under the stone bridge before it reaches the sea. In spring the "
    "water is high and brown, and the children of the village are told to keep away from the bank. In summer "
    "it is low and clear, and the same children wade across it to the island of willows in the middle.",
    "A lamp was burning in the window of the last house on the hill. The traveller had walked all day, and the "
    "light seemed to him the kindest thing he had seen since morning. He knocked, and after a long while an old "
    "woman opened the door and asked him what he wanted at so late an hour.",
    "Every winter the birds come down from the mountains to the gardens of the town. They are hungry and bold, "
    "and they will take bread from the hand of anyone who stands still long enough. The baker keeps a sack of "
    "crumbs by his door for them, and they know it well.",
    "The letter arrived on a Tuesday, which was strange, because the post never came on Tuesdays. It was written "
    "in a small and careful hand, and it asked only one question: whether the house by the river was still for "
    "sale, and if so, for how much.",
    "Numbers are a language of their own. One and one make two, two and two make four, and ten tens make a "
    "hundred. The merchant counted his coins twice every evening, first from left to right and then from right "
    "to left, so that no mistake could hide in the counting.",
]

NOUNS = ("house river garden window road king queen child teacher farmer sailor doctor merchant city village "
         "forest mountain letter book lamp door table horse dog cat bird tree flower stone bridge ship island "
         "market school church castle field winter summer morning evening night story song friend brother "
         "sister mother father soldier traveller baker miller hunter shepherd lake valley storm fire wall "
         "tower harbour coat hat key box basket apple loaf cup bell clock candle road path hill wind cloud "
         "servant captain judge painter poet singer student neighbour stranger").split()
ADJECTIVES = ("old young small large quiet bright dark cold warm green red white black tall short kind proud "
              "poor rich happy sad careful strange gentle heavy empty narrow wide long quick slow clever tired "
              "honest brave lonely busy golden silver wooden stone hidden distant ancient").split()
VERBS_T = [("saw", "sees"), ("found", "finds"), ("carried", "carries"), ("opened", "opens"), ("built", "builds"),
           ("painted", "paints"), ("followed", "follows"), ("remembered", "remembers"), ("sold", "sells"),
           ("bought", "buys"), ("watched", "watches"), ("visited", "visits"), ("wrote", "writes"),
           ("read", "reads"), ("loved", "loves"), ("helped", "helps"), ("called", "calls"), ("left", "leaves"),
           ("closed", "closes"), ("counted", "counts"), ("guarded", "guards"), ("mended", "mends")]
VERBS_I = [("slept", "sleeps"), ("waited", "waits"), ("laughed", "laughs"), ("walked", "walks"),
           ("listened", "listens"), ("smiled", "smiles"), ("worked", "works"), ("sang", "sings"),
           ("arrived", "arrives"), ("returned", "returns"), ("rested", "rests"), ("wondered", "wonders")]
PREPOSITIONS = "in near behind beside under across through beyond towards from".split()
ADVERBS = "slowly quietly suddenly carefully often never always gladly early late again together".split()
TIMES = ["in the morning", "at night", "every day", "in the spring", "after the storm", "before dawn",
         "on the last day of the year", "when the bell rang", "while the others slept", "long ago"]
NAMES = "Anna Peter Maria Thomas Elsa Jonas Clara Martin Greta Paul Hanna Lukas".split()
CONNECTIVES = ["and", "but", "so", "because", "although", "while"]
SAYINGS = ["\"Come in,\" said {name}, \"the fire is warm.\"", "\"Where is the {noun}?\" asked {name}.",
           "\"I have seen the {adj} {noun},\" said {name} quietly.", "\"Not today,\" answered {name}."]


def article(word: str, definite: bool) -> str:
    if definite:
        return "the"
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(rng: random.Random, plural: bool = False) -> str:
    noun = rng.choice(NOUNS)
    if plural:
        if noun.endswith("y") and noun[-2] not in "aeiou":
            noun = noun[:-1] + "ies"
        else:
            noun = noun + ("es" if noun.endswith(("s", "x", "ch")) else "s")
        return "the " + (rng.choice(ADJECTIVES) + " " if rng.random() < 0.4 else "") + noun
    words = ([rng.choice(ADJECTIVES)] if rng.random() < 0.5 else []) + [noun]
    return article(words[0], rng.random() < 0.6) + " " + " ".join(words)


def clause(rng: random.Random, present: bool) -> str:
    if rng.random() < 0.25:
        subject, plural = rng.choice(NAMES), False
    else:
        plural = rng.random() < 0.3
        subject = noun_phrase(rng, plural)
    transitive = rng.random() < 0.6
    past, third_person = rng.choice(VERBS_T if transitive else VERBS_I)
    verb = past if not present else (base_form(third_person) if plural else third_person)
    text = f"{subject} {verb}" + (f" {noun_phrase(rng)}" if transitive else "")
    if rng.random() < 0.4:
        text += f" {rng.choice(PREPOSITIONS)} {noun_phrase(rng)}"
    if rng.random() < 0.2:
        text += " " + rng.choice(ADVERBS)
    return text


def base_form(present_s: str) -> str:
    if present_s.endswith("ies"):
        return present_s[:-3] + "y"
    if present_s.endswith(("ches", "shes", "sses", "xes")):
        return present_s[:-2]
    return present_s[:-1]


def sentence(rng: random.Random, present: bool) -> str:
    r = rng.random()
    if r < 0.1:
        return rng.choice(SAYINGS).format(name=rng.choice(NAMES), noun=rng.choice(NOUNS),
                                          adj=rng.choice(ADJECTIVES))
    text = clause(rng, present)
    if r < 0.45:
        text += f" {rng.choice(CONNECTIVES)} {clause(rng, present)}"
    if rng.random() < 0.25:
        text = f"{rng.choice(TIMES)}, {text}" if rng.random() < 0.5 else f"{text} {rng.choice(TIMES)}"
    return text[0].upper() + text[1:] + "."


def paragraph(rng: random.Random) -> str:
    present = rng.random() < 0.3
    return " ".join(sentence(rng, present) for _ in range(rng.randint(3, 8)))


def wrap(text: str, width: int = 78) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join(lines + [line])


def make_sample(seed: int = 0, target_bytes: int = TARGET_BYTES) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    size, chapter = 0, 1
    while size < target_bytes:
        if rng.random() < 0.04:
            block = f"CHAPTER {chapter}"
            chapter += 1
        elif rng.random() < 0.12:
            block = wrap(rng.choice(WRITTEN))
        else:
            block = wrap(paragraph(rng))
        parts.append(block)
        size += len(block) + 2
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    path = Path(__file__).resolve().parents[2] / "composer" / "data" / "sample.txt"
    path.write_text(make_sample())
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
