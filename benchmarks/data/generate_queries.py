#!/usr/bin/env python3
"""Generate the shipped query set ``pytest_ipw/data/queries.jsonl`` (deterministic, stdlib only).

Six domains of about 60 queries each, every one with a verifiable reference answer:

* ``arithmetic``, ``units``, ``logic`` and ``strings`` are generated from a seeded RNG;
* ``knowledge`` and ``science_mc`` are hand-written lists below (answers double-checked).

Difficulty is spread so that a ~135M-parameter model gets most of the easy items of some
domains (capitals, single-digit sums) but few hard ones, while a 7B model scores clearly higher.
``split`` follows the chat-vs-reasoning distinction: recall and transformation tasks are
``chat``; tasks that need a derivation (calculation, deduction, elimination) are ``reasoning``.

Usage: ``python benchmarks/data/generate_queries.py [--seed 2025] [--output PATH]``.
The same seed always writes byte-identical output.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path
from typing import Any

DEFAULT_SEED = 2025
# The package holds the one copy; the benchmark reads it through the package (pytest_ipw.queries).
DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "pytest_ipw" / "data" / "queries.jsonl"

# Answer instructions, chosen on the embedded SmolLM2-135M's answers. Asked "Answer with just the number." or
# "Answer yes or no.", it explained, listed terms or spelled letter by letter: 44 of 363 answers ran past 64
# tokens, 11 of them into loops no token limit ends. With these wordings every answer ends by itself (the
# longest after 162 tokens), within the default --ipw-max-tokens (core/defaults.py). Reword them only with
# a new measurement (docs/datasets.md, "Answer instructions").
NUMBER_ONLY = "Reply with only the number, without any explanation."
YES_NO = "Reply with one word: yes or no."
LETTER_ONLY = "Answer with the letter only."
UPPERCASE_ONLY = "Reply with only the uppercase word."
REVERSED_ONLY = 'Reply with only the reversed word. For example, "cat" reversed is "tac".'
LETTERS_ONLY = "Reply with only those letters, as one word."

Row = dict[str, Any]


def fmt_num(value: float, places: int = 2) -> str:
    """Render a reference number without float noise ("2.5", "5000", never "5000.0")."""
    text = f"{round(value, places):.{places}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def row(
    prompt: str,
    answer: str,
    domain: str,
    split: str,
    scorer: str,
    difficulty: str,
    *,
    choices: list[str] | None = None,
    tolerance: float | None = None,
    aliases: list[str] | None = None,
) -> Row:
    return {
        "prompt": prompt,
        "answer": answer,
        "domain": domain,
        "split": split,
        "scorer": scorer,
        "choices": choices or [],
        "tolerance": tolerance,
        "difficulty": difficulty,
        "aliases": aliases or [],
    }


def until(rows: list[Row], n: int):
    """Loop until ``n`` more rows exist: ``add`` helpers skip duplicate prompts, so draws are retried."""
    target, guard = len(rows) + n, 0
    while len(rows) < target:
        guard += 1
        assert guard < 10_000, "cannot draw enough distinct prompts"
        yield


# ---------------------------------------------------------------------------------------------
# arithmetic (generated)
# ---------------------------------------------------------------------------------------------


def gen_arithmetic(rng: random.Random) -> list[Row]:
    rows: list[Row] = []

    def add(prompt: str, answer: int, difficulty: str) -> None:
        if any(r["prompt"].startswith(prompt) for r in rows):
            return
        rows.append(row(f"{prompt} {NUMBER_ONLY}", str(answer), "arithmetic", "reasoning", "numeric", difficulty))

    # easy: single-digit addition and subtraction (non-negative result)
    for _ in until(rows, 12):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        add(f"What is {a} + {b}?", a + b, "easy")
    for _ in until(rows, 8):
        a = rng.randint(2, 9)
        b = rng.randint(1, a)
        add(f"What is {a} - {b}?", a - b, "easy")

    # medium: two-digit sums/differences, times tables, exact division
    for _ in until(rows, 5):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        add(f"What is {a} + {b}?", a + b, "medium")
    for _ in until(rows, 5):
        a, b = sorted((rng.randint(10, 99), rng.randint(10, 99)), reverse=True)
        add(f"What is {a} - {b}?", a - b, "medium")
    for _ in until(rows, 5):
        a, b = rng.randint(3, 12), rng.randint(3, 9)
        add(f"What is {a} × {b}?", a * b, "medium")
    for _ in until(rows, 5):
        d, q = rng.randint(2, 9), rng.randint(3, 12)
        add(f"What is {d * q} ÷ {d}?", q, "medium")

    # hard: two-digit products, percentages, operator precedence, multi-step word problems
    for _ in until(rows, 5):
        a, b = rng.randint(12, 99), rng.randint(12, 99)
        add(f"What is {a} × {b}?", a * b, "hard")
    percents = [5, 10, 15, 20, 25, 30, 40, 60, 75]
    for _ in until(rows, 5):
        p, n = rng.choice(percents), rng.randint(2, 40) * 20
        if p * n % 100 == 0:
            add(f"What is {p}% of {n}?", p * n // 100, "hard")
    for _ in until(rows, 4):
        a, b, c = rng.randint(5, 40), rng.randint(3, 12), rng.randint(3, 12)
        add(f"What is {a} + {b} × {c}? Follow the usual order of operations.", a + b * c, "hard")
    for _ in until(rows, 3):
        a, b, c = rng.randint(3, 20), rng.randint(3, 20), rng.randint(3, 9)
        d = rng.randint(1, (a + b) * c - 1)
        add(f"What is ({a} + {b}) × {c} − {d}?", (a + b) * c - d, "hard")
    items = ["apples", "pencils", "stickers", "marbles", "books", "cards"]
    names = ["Tom", "Maria", "Sam", "Lena", "Omar", "Priya"]
    for _ in until(rows, 3):
        who, item = rng.choice(names), rng.choice(items)
        packs, per_pack = rng.randint(3, 9), rng.randint(4, 12)
        gives = rng.randint(2, packs * per_pack - 2)
        buys = rng.randint(2, 15)
        total = packs * per_pack - gives + buys
        add(
            f"{who} buys {packs} packs of {item} with {per_pack} {item} in each pack, gives away {gives} {item}, "
            f"and then buys {buys} more. How many {item} does {who} have now?",
            total,
            "hard",
        )
    return rows


# ---------------------------------------------------------------------------------------------
# units (generated)
# ---------------------------------------------------------------------------------------------


def gen_units(rng: random.Random) -> list[Row]:
    rows: list[Row] = []

    def add(prompt: str, value: float, difficulty: str, tolerance: float) -> None:
        if any(r["prompt"].startswith(prompt) for r in rows):
            return
        rows.append(
            row(f"{prompt} {NUMBER_ONLY}", fmt_num(value), "units", "chat", "numeric", difficulty, tolerance=tolerance)
        )

    def approx_tol(value: float) -> float:
        # Inexact factors: accept answers within 1% (models round 1.609 to 1.6 etc.).
        return round(max(abs(value) * 0.01, 0.05), 3)

    exact_tol = 0.01  # exact conversions: only float/rounding noise is forgiven

    easy = [
        ("How many meters are in {x} kilometers?", 1000),
        ("How many centimeters are in {x} meters?", 100),
        ("How many grams are in {x} kilograms?", 1000),
        ("How many minutes are in {x} hours?", 60),
        ("How many seconds are in {x} minutes?", 60),
        ("How many days are in {x} weeks?", 7),
        ("How many milliliters are in {x} liters?", 1000),
        ("How many eggs are in {x} dozen?", 12),
        ("How many years are in {x} decades?", 10),
        ("How many centimeters are in {x} decimeters?", 10),
    ]
    for template, factor in easy:
        for _ in until(rows, 2):
            x = rng.randint(2, 9)
            add(template.format(x=x), x * factor, "easy", exact_tol)

    # medium: decimals, bigger factors, Celsius to Fahrenheit
    for _ in until(rows, 2):
        cm = rng.randint(11, 99) * 10 + rng.choice([0, 5])
        add(f"How many meters are {cm} centimeters?", cm / 100, "medium", exact_tol)
    for _ in until(rows, 2):
        g = rng.randint(11, 49) * 100 + rng.choice([0, 50])
        add(f"How many kilograms are {g} grams?", g / 1000, "medium", exact_tol)
    for _ in until(rows, 2):
        ml = rng.randint(11, 49) * 100
        add(f"How many liters are {ml} milliliters?", ml / 1000, "medium", exact_tol)
    for _ in until(rows, 2):
        d = rng.randint(2, 9)
        add(f"How many hours are in {d} days?", d * 24, "medium", exact_tol)
    for _ in until(rows, 2):
        ft = rng.randint(2, 12)
        add(f"How many inches are in {ft} feet?", ft * 12, "medium", exact_tol)
    for _ in until(rows, 2):
        h = rng.randint(2, 5)
        add(f"How many seconds are in {h} hours?", h * 3600, "medium", exact_tol)
    for _ in until(rows, 2):
        m = rng.choice([30, 45, 75, 90, 105, 135, 150, 165, 210])
        add(f"How many hours are {m} minutes?", m / 60, "medium", exact_tol)
    for _ in until(rows, 2):
        yd = rng.randint(3, 30)
        add(f"How many feet are in {yd} yards?", yd * 3, "medium", exact_tol)
    for _ in until(rows, 2):
        m = rng.randint(11, 99) / 10
        add(f"How many millimeters are in {fmt_num(m)} meters?", m * 1000, "medium", exact_tol)
    for _ in until(rows, 2):
        c = rng.randint(1, 20) * 5
        add(f"Convert {c} degrees Celsius to degrees Fahrenheit.", c * 9 / 5 + 32, "medium", 0.5)

    # hard: inexact factors, temperature and speed conversions, derived units
    for _ in until(rows, 2):
        mi = rng.randint(3, 60)
        add(f"How many kilometers are {mi} miles?", mi * 1.609344, "hard", approx_tol(mi * 1.609344))
    for _ in until(rows, 2):
        km = rng.randint(5, 100)
        add(f"How many miles are {km} kilometers?", km / 1.609344, "hard", approx_tol(km / 1.609344))
    for _ in until(rows, 2):
        inch = rng.randint(3, 40)
        add(f"How many centimeters are {inch} inches?", inch * 2.54, "hard", 0.05)
    for _ in until(rows, 2):
        lb = rng.randint(5, 200)
        add(f"How many kilograms are {lb} pounds?", lb * 0.45359237, "hard", approx_tol(lb * 0.45359237))
    for _ in until(rows, 2):
        kg = rng.randint(2, 90)
        add(f"How many pounds are {kg} kilograms?", kg / 0.45359237, "hard", approx_tol(kg / 0.45359237))
    for _ in until(rows, 2):
        f = 32 + 9 * rng.randint(1, 15)
        add(f"Convert {f} degrees Fahrenheit to degrees Celsius.", (f - 32) * 5 / 9, "hard", 0.5)
    for _ in until(rows, 2):
        kmh = 18 * rng.randint(1, 8)
        add(f"Convert a speed of {kmh} kilometers per hour to meters per second.", kmh / 3.6, "hard", 0.05)
    for _ in until(rows, 2):
        ms = rng.randint(2, 40)
        add(f"Convert a speed of {ms} meters per second to kilometers per hour.", ms * 3.6, "hard", 0.05)
    for _ in until(rows, 2):
        sqm = rng.randint(2, 9)
        add(f"How many square centimeters are in {sqm} square meters?", sqm * 10000, "hard", exact_tol)
    for _ in until(rows, 2):
        gal = rng.randint(2, 20)
        add(f"How many liters are {gal} US gallons?", gal * 3.785411784, "hard", approx_tol(gal * 3.785411784))
    return rows


# ---------------------------------------------------------------------------------------------
# knowledge (hand-written; every answer checked)
# ---------------------------------------------------------------------------------------------

# (country, capital, aliases, difficulty). Avoided on purpose: countries whose capital is disputed
# or split (Bolivia, South Africa, Sri Lanka) and city-states named like the country.
CAPITALS: list[tuple[str, str, list[str], str]] = [
    ("France", "Paris", [], "easy"),
    ("Japan", "Tokyo", [], "easy"),
    ("Italy", "Rome", ["Roma"], "easy"),
    ("Germany", "Berlin", [], "easy"),
    ("Spain", "Madrid", [], "easy"),
    ("the United Kingdom", "London", [], "easy"),
    ("Russia", "Moscow", [], "easy"),
    ("China", "Beijing", ["Peking"], "easy"),
    ("Egypt", "Cairo", [], "easy"),
    ("Greece", "Athens", [], "easy"),
    ("Canada", "Ottawa", [], "medium"),
    ("Australia", "Canberra", [], "medium"),
    ("Brazil", "Brasilia", ["Brasília"], "medium"),
    ("Turkey", "Ankara", [], "medium"),
    ("Switzerland", "Bern", ["Berne"], "medium"),
    ("Argentina", "Buenos Aires", [], "medium"),
    ("Kenya", "Nairobi", [], "medium"),
    ("Norway", "Oslo", [], "medium"),
    ("Portugal", "Lisbon", ["Lisboa"], "medium"),
    ("South Korea", "Seoul", [], "medium"),
    ("Mongolia", "Ulaanbaatar", ["Ulan Bator", "Ulaanbaatar City"], "hard"),
    ("Burkina Faso", "Ouagadougou", [], "hard"),
    ("Bhutan", "Thimphu", [], "hard"),
    ("Nigeria", "Abuja", [], "hard"),
    ("Kazakhstan", "Astana", ["Nur-Sultan"], "hard"),
    ("Kyrgyzstan", "Bishkek", [], "hard"),
]

# (element, symbol, difficulty). Symbols that are also English words (He, In, As, I...) are left
# out: the lenient exact scorer would find them in almost any sentence.
SYMBOLS: list[tuple[str, str, str]] = [
    ("oxygen", "O", "easy"),
    ("hydrogen", "H", "easy"),
    ("carbon", "C", "easy"),
    ("nitrogen", "N", "easy"),
    ("sodium", "Na", "medium"),
    ("iron", "Fe", "medium"),
    ("gold", "Au", "medium"),
    ("silver", "Ag", "medium"),
    ("potassium", "K", "medium"),
    ("lead", "Pb", "hard"),
    ("tungsten", "W", "hard"),
    ("mercury", "Hg", "hard"),
    ("tin", "Sn", "hard"),
]

# (title, answer = surname, aliases, difficulty). A full-name reply contains the surname as a
# whole word, which the exact scorer accepts.
AUTHORS: list[tuple[str, str, list[str], str]] = [
    ("the play \"Romeo and Juliet\"", "Shakespeare", ["William Shakespeare"], "easy"),
    ("the Harry Potter books", "Rowling", ["J. K. Rowling", "J.K. Rowling"], "easy"),
    ("the novel \"Pride and Prejudice\"", "Austen", ["Jane Austen"], "easy"),
    ("the novel \"Nineteen Eighty-Four\" (1984)", "Orwell", ["George Orwell", "Eric Blair"], "medium"),
    ("the book \"On the Origin of Species\"", "Darwin", ["Charles Darwin"], "medium"),
    ("the novel \"War and Peace\"", "Tolstoy", ["Leo Tolstoy", "Tolstoi"], "medium"),
    ("the novel \"Oliver Twist\"", "Dickens", ["Charles Dickens"], "medium"),
    ("the novel \"The Hobbit\"", "Tolkien", ["J. R. R. Tolkien"], "medium"),
    ("the novel \"Don Quixote\"", "Cervantes", ["Miguel de Cervantes"], "hard"),
    ("the novel \"Moby-Dick\"", "Melville", ["Herman Melville"], "hard"),
    ("the novel \"Crime and Punishment\"", "Dostoevsky", ["Dostoyevsky", "Dostoevski", "Dostoievski"], "hard"),
    (
        "the novel \"One Hundred Years of Solitude\"",
        "Garcia Marquez",
        ["Gabriel Garcia Marquez", "Márquez", "Marquez"],
        "hard",
    ),
]

# (question, answer, aliases, difficulty, instruction)
FACTS: list[tuple[str, str, list[str], str, str]] = [
    ("Which planet is known as the Red Planet?", "Mars", [], "easy", "Answer with one word."),
    ("What is the largest planet in our solar system?", "Jupiter", [], "easy", "Answer with one word."),
    ("What is the largest animal on Earth?", "blue whale", [], "easy", "Answer with the animal's name only."),
    ("What is the largest ocean on Earth?", "Pacific", ["Pacific Ocean"], "easy", "Answer with the name only."),
    ("What is the tallest mountain on Earth above sea level?", "Everest", ["Mount Everest"], "easy",
     "Answer with the name only."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", ["da Vinci", "Leonardo"], "easy",
     "Answer with the name only."),
    ("What is the largest continent by land area?", "Asia", [], "medium", "Answer with one word."),
    ("Which planet is the farthest from the Sun?", "Neptune", [], "medium", "Answer with one word."),
    ("What is the currency of Japan?", "yen", ["Japanese yen"], "medium", "Answer with one word."),
    ("What is the official language of Brazil?", "Portuguese", [], "medium", "Answer with one word."),
    ("Who was the first person to walk on the Moon?", "Armstrong", ["Neil Armstrong"], "hard",
     "Answer with the name only."),
    ("What is the hottest planet in our solar system?", "Venus", [], "hard", "Answer with one word."),
]


def gen_knowledge(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    for country, capital, aliases, difficulty in CAPITALS:
        rows.append(
            row(f"What is the capital of {country}? Answer with the city name only.", capital, "knowledge", "chat",
                "exact", difficulty, aliases=aliases)
        )
    for element, symbol, difficulty in SYMBOLS:
        rows.append(
            row(f"What is the chemical symbol for {element}? Answer with the symbol only.", symbol, "knowledge",
                "chat", "exact", difficulty)
        )
    for title, surname, aliases, difficulty in AUTHORS:
        rows.append(
            row(f"Who wrote {title}? Answer with the author's name only.", surname, "knowledge", "chat", "exact",
                difficulty, aliases=aliases)
        )
    for question, answer, aliases, difficulty, instruction in FACTS:
        rows.append(row(f"{question} {instruction}", answer, "knowledge", "chat", "exact", difficulty,
                        aliases=aliases))
    rng.shuffle(rows)  # mix the sub-topics so that --ipw-limit samples all of them
    return rows


# ---------------------------------------------------------------------------------------------
# science_mc (hand-written; the correct option is listed first here and shuffled at generation)
# ---------------------------------------------------------------------------------------------

# (question, [correct, distractor, distractor, distractor], difficulty)
SCIENCE_MC: list[tuple[str, list[str], str]] = [
    # easy
    ("Which gas do plants take in from the air for photosynthesis?",
     ["Carbon dioxide", "Oxygen", "Nitrogen", "Helium"], "easy"),
    ("What is the boiling point of water at sea level, in degrees Celsius?", ["100", "50", "0", "212"], "easy"),
    ("Which organ pumps blood through the human body?", ["Heart", "Liver", "Lungs", "Kidney"], "easy"),
    ("Which planet is closest to the Sun?", ["Mercury", "Venus", "Earth", "Mars"], "easy"),
    ("What force pulls objects toward the ground on Earth?", ["Gravity", "Magnetism", "Friction", "Electricity"],
     "easy"),
    ("Water is made of hydrogen and which other element?", ["Oxygen", "Carbon", "Nitrogen", "Sodium"], "easy"),
    ("What do bees make honey from?", ["Nectar", "Tree bark", "Sand", "Leaves"], "easy"),
    ("What is the state of water when it is frozen?", ["Solid", "Liquid", "Gas", "Plasma"], "easy"),
    ("Which of these animals is a mammal?", ["Dolphin", "Shark", "Salmon", "Octopus"], "easy"),
    ("How many legs does an insect have?", ["Six", "Eight", "Four", "Ten"], "easy"),
    ("Which organs do humans use to breathe?", ["Lungs", "Stomach", "Kidneys", "Liver"], "easy"),
    ("What star is at the center of our solar system?", ["The Sun", "Polaris", "Sirius", "Vega"], "easy"),
    ("Which part of a plant takes up water from the soil?", ["Roots", "Leaves", "Flowers", "Seeds"], "easy"),
    ("Which of these is a renewable source of energy?", ["Solar power", "Coal", "Oil", "Natural gas"], "easy"),
    ("Which of these animals lays eggs?", ["Chicken", "Cow", "Dog", "Horse"], "easy"),
    ("What is the freezing point of water at sea level, in degrees Celsius?", ["0", "10", "32", "100"], "easy"),
    ("Which sense organ is used for hearing?", ["Ear", "Eye", "Nose", "Tongue"], "easy"),
    ("Which of these materials is attracted to a magnet?", ["Iron", "Wood", "Glass", "Plastic"], "easy"),
    ("What does a caterpillar turn into?", ["Butterfly", "Spider", "Beetle", "Worm"], "easy"),
    ("Which of these is needed for a fire to burn?", ["Oxygen", "Helium", "Sand", "Salt water"], "easy"),
    # medium
    ("What is the chemical formula of table salt?", ["NaCl", "KCl", "NaOH", "HCl"], "medium"),
    ("Which organelle is known as the powerhouse of the cell?",
     ["Mitochondrion", "Ribosome", "Golgi apparatus", "Nucleus"], "medium"),
    ("Which gas makes up most of Earth's atmosphere?", ["Nitrogen", "Oxygen", "Carbon dioxide", "Argon"], "medium"),
    ("Which blood cells mainly fight infections?", ["White blood cells", "Red blood cells", "Platelets", "Plasma"],
     "medium"),
    ("What is the SI unit of force?", ["Newton", "Joule", "Watt", "Pascal"], "medium"),
    ("What is the pH of pure water at 25 degrees Celsius?", ["7", "0", "14", "1"], "medium"),
    ("Which planet has the most prominent ring system?", ["Saturn", "Mars", "Mercury", "Venus"], "medium"),
    ("In which organelle does photosynthesis take place?", ["Chloroplast", "Mitochondrion", "Nucleus", "Ribosome"],
     "medium"),
    ("Through which of these does sound travel fastest?", ["Steel", "Air", "Water", "A vacuum"], "medium"),
    ("What type of rock forms when lava or magma cools and hardens?",
     ["Igneous", "Sedimentary", "Metamorphic", "Fossil"], "medium"),
    ("What is the SI unit of electric current?", ["Ampere", "Volt", "Ohm", "Watt"], "medium"),
    ("Which vitamin does human skin make when exposed to sunlight?",
     ["Vitamin D", "Vitamin C", "Vitamin A", "Vitamin K"], "medium"),
    ("Which particle has a negative electric charge?", ["Electron", "Proton", "Neutron", "Nucleus"], "medium"),
    ("Which of the following is a noble gas?", ["Neon", "Nitrogen", "Chlorine", "Hydrogen"], "medium"),
    ("What is the process called when water vapor turns into liquid water?",
     ["Condensation", "Evaporation", "Sublimation", "Melting"], "medium"),
    ("What is the main job of red blood cells?",
     ["Carrying oxygen", "Fighting infection", "Digesting food", "Sending nerve signals"], "medium"),
    ("Which planet is famous for its Great Red Spot storm?", ["Jupiter", "Mars", "Saturn", "Mercury"], "medium"),
    ("A ramp is an example of which simple machine?", ["Inclined plane", "Lever", "Pulley", "Wheel and axle"],
     "medium"),
    ("Which molecule carries genetic information in most living things?", ["DNA", "ATP", "Glucose", "Cholesterol"],
     "medium"),
    ("How long does it take the Earth to orbit the Sun once?", ["About 365 days", "About 24 hours",
     "About 30 days", "About 10 years"], "medium"),
    # hard
    ("What is the atomic number of carbon?", ["6", "12", "8", "14"], "hard"),
    ("Who formulated the three laws of motion?", ["Isaac Newton", "Albert Einstein", "Galileo Galilei", "Niels Bohr"],
     "hard"),
    ("What is the approximate acceleration due to gravity at Earth's surface, in meters per second squared?",
     ["9.8", "1.6", "15.2", "98"], "hard"),
    ("Which type of chemical bond is formed when two atoms share a pair of electrons?",
     ["Covalent bond", "Ionic bond", "Metallic bond", "Hydrogen bond"], "hard"),
    ("Which element is the most abundant in the universe by mass?", ["Hydrogen", "Helium", "Oxygen", "Carbon"],
     "hard"),
    ("What are the different versions of the same gene called?", ["Alleles", "Codons", "Chromosomes", "Ribosomes"],
     "hard"),
    ("What is the SI unit of electrical resistance?", ["Ohm", "Volt", "Ampere", "Farad"], "hard"),
    ("Which gas law says that, at constant temperature, the pressure of a gas is inversely proportional to its "
     "volume?", ["Boyle's law", "Charles's law", "Avogadro's law", "Hooke's law"], "hard"),
    ("Which part of the brain mainly coordinates balance and movement?",
     ["Cerebellum", "Cerebrum", "Medulla oblongata", "Hypothalamus"], "hard"),
    ("Which subatomic particle's count determines which element an atom is?",
     ["Proton", "Neutron", "Electron", "Photon"], "hard"),
    ("What is the chemical formula of methane?", ["CH4", "CO2", "C2H6", "NH3"], "hard"),
    ("Which enzyme in saliva starts the digestion of starch?", ["Amylase", "Pepsin", "Lipase", "Trypsin"], "hard"),
    ("In which layer of the atmosphere is most of the ozone layer found?",
     ["Stratosphere", "Troposphere", "Mesosphere", "Thermosphere"], "hard"),
    ("What is the SI unit of frequency?", ["Hertz", "Joule", "Tesla", "Coulomb"], "hard"),
    ("Which blood type is known as the universal red-cell donor?",
     ["O negative", "AB positive", "A positive", "B negative"], "hard"),
    ("Which kind of lens corrects nearsightedness (myopia)?",
     ["Concave lens", "Convex lens", "Prism", "Flat mirror"], "hard"),
    ("Which of these is a chemical change?", ["Iron rusting", "Ice melting", "Water boiling", "Glass breaking"],
     "hard"),
    ("Which planet rotates on its side, with an axial tilt of about 98 degrees?",
     ["Uranus", "Neptune", "Saturn", "Venus"], "hard"),
    ("Approximately what is Avogadro's number?",
     ["6.02 × 10^23", "3.00 × 10^8", "9.81 × 10^2", "1.60 × 10^-19"], "hard"),
    ("Which natural mineral is the hardest on the Mohs scale?", ["Diamond", "Quartz", "Topaz", "Corundum"], "hard"),
]


def gen_science_mc(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    # Balance the correct letter (each of A-D equally often) so that always answering one letter scores 25%.
    positions = [i % 4 for i in range(len(SCIENCE_MC))]
    rng.shuffle(positions)
    for (question, options, difficulty), position in zip(SCIENCE_MC, positions):
        correct = options[0]
        shuffled = options[1:]
        rng.shuffle(shuffled)
        shuffled.insert(position, correct)
        letters = "ABCD"
        listing = "\n".join(f"{letters[i]}) {text}" for i, text in enumerate(shuffled))
        answer = letters[shuffled.index(correct)]
        rows.append(
            row(f"{question}\n{listing}\n{LETTER_ONLY}", answer, "science_mc", "reasoning", "choice", difficulty,
                choices=shuffled)
        )
    return rows


# ---------------------------------------------------------------------------------------------
# logic (generated)
# ---------------------------------------------------------------------------------------------

PEOPLE = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack", "Kate", "Leo"]
# (comparative, top superlative, bottom superlative, second-from-top phrase)
RELATIONS = [
    ("taller", "tallest", "shortest", "second tallest"),
    ("older", "oldest", "youngest", "second oldest"),
    ("faster", "fastest", "slowest", "second fastest"),
    ("heavier", "heaviest", "lightest", "second heaviest"),
]
NONSENSE = ["bloops", "razzies", "lazzies", "zorbs", "wugs", "daxes", "feps", "glims", "trags", "vups", "blickets",
            "snarps", "mibs", "torps", "kivs", "dorgs"]


# A self-correction: the reply takes back what it said ("Henry. Wait, no — Jack", "Yes. Actually, no").
CORRECTION_CUE = r"(?:wait|actually|sorry|correction|hmm|i\s+mean|on\s+second\s+thought)"
CORRECTION_FILL = r"(?:\W+(?:no|actually|wait|hmm|sorry))*(?:\W+(?:it'?s|it\s+is|the\s+answer\s+is|make\s+that))?"


def corrected_to(alternatives: list[str]) -> str:
    """A later self-correction to one of ``alternatives``, for a negative lookahead."""
    return rf"[\s\S]*\b{CORRECTION_CUE}{CORRECTION_FILL}\W+(?:{'|'.join(alternatives)})\b"


def name_regex(name: str, superlative: str, others: list[str]) -> str:
    """Accept the name as the whole reply, as "<name> is the <superlative>", "the <superlative> is <name>",
    "Answer: <name>", "It's <name>", or after a self-correction ("Jack. Wait, no — <name>").

    Not: a restated premise ("<name> is older than Jack"), another superlative ("the tallest is <name>" when
    asked for the shortest), a hedge ("<name> or Jack"), or a reply that later corrects itself to someone else.
    """
    sup = re.escape(superlative).replace(r"\ ", r"\s+")
    forms = [
        rf"\A\W*{name}\W*\Z",
        rf"\b{name}\s+is\s+(?:the\s+)?{sup}\b",
        rf"\b{sup}(?:\s+(?:one|person))?\s+is\W+{name}\b",
        rf"\banswer(?:\s+is)?\W+{name}\b",
        rf"\bit(?:'|’)?s\s+{name}\b|\bit\s+is\s+{name}\b",
        # after a self-correction, unless it goes on to restate a premise ("Wait, <name> is older than...")
        rf"\b{CORRECTION_CUE}{CORRECTION_FILL}\W+{name}\b(?!\s+is\b(?!\s+(?:the\s+)?{sup}\b))",
    ]
    hedge = r"(?!\s*,?\s*(?:or|/)\s*\w)"
    return rf"(?:{'|'.join(forms)}){hedge}(?!{corrected_to(others)})"


def yes_no_regex(word: str, premise_words: list[str]) -> str:
    r"""The reply opens with the answer (after "Answer:" or a corrected opening "No, wait: yes").

    \A rather than ^: with MULTILINE, ^ would also match a later line. Not: a restated premise that starts
    with the word ("No bloops are zorbs."), or a reply that later corrects itself to the other word.
    """
    other = "no" if word == "yes" else "yes"
    opening = r"(?:(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\W*)?"
    corrected_opening = rf"(?:{other}\W+{CORRECTION_CUE}{CORRECTION_FILL}\W+)?"
    return (rf"\A\W*{opening}{corrected_opening}({word})\b(?!\s+(?:{'|'.join(premise_words)})\b)"
            rf"(?!{corrected_to([other])})")


def gen_logic(rng: random.Random) -> list[Row]:
    rows: list[Row] = []

    # orderings: easy 3 people, medium 4, hard 5 (asks for the second from the top or the middle)
    for difficulty, size, count in (("easy", 3, 7), ("medium", 4, 7), ("hard", 5, 6)):
        for _ in range(count):
            order = rng.sample(PEOPLE, size)  # order[0] is the "most"
            comparative, top, bottom, second = rng.choice(RELATIONS)
            facts = [f"{order[i]} is {comparative} than {order[i + 1]}." for i in range(size - 1)]
            rng.shuffle(facts)
            if difficulty == "hard":
                superlative, answer = second, order[1]
            elif rng.random() < 0.5:
                superlative, answer = top, order[0]
            else:
                superlative, answer = bottom, order[-1]
            prompt = f"{' '.join(facts)} Who is the {superlative}? Answer with one name."
            rows.append(row(prompt, name_regex(answer, superlative, [p for p in order if p != answer]), "logic", "reasoning", "regex", difficulty))

    # syllogisms with nonsense words, so world knowledge cannot help; yes/no balanced
    forms = [
        # (difficulty, premises, question, answer)
        ("easy", "All {a} are {b}. All {b} are {c}.", "must all {a} be {c}?", "yes"),
        ("easy", "All {a} are {b}. No {b} are {c}.", "can any {a} be {c}?", "no"),
        ("medium", "All {a} are {b}.", "must all {b} be {a}?", "no"),
        ("medium", "No {a} are {b}. All {c} are {a}.", "can any {c} be {b}?", "no"),
        ("medium", "All {a} are {b}. Some {c} are {a}.", "must some {c} be {b}?", "yes"),
        ("hard", "All {a} are {b}. All {c} are {b}.", "must all {a} be {c}?", "no"),
        ("hard", "Some {a} are {b}. All {b} are {c}.", "must some {a} be {c}?", "yes"),
        ("hard", "All {a} are {b}. Some {c} are not {b}.", "must some {c} not be {a}?", "yes"),
    ]
    plan = ["easy"] * 6 + ["medium"] * 7 + ["hard"] * 7
    for index, difficulty in enumerate(plan):
        # Cycle through the forms of each difficulty (not random) to keep yes and no roughly balanced.
        difficulty_forms = [f for f in forms if f[0] == difficulty]
        _, premises, question, answer = difficulty_forms[index % len(difficulty_forms)]
        a, b, c = rng.sample(NONSENSE, 3)
        statements, asked = premises.format(a=a, b=b, c=c), question.format(a=a, b=b, c=c)
        prompt = f"{statements} Based only on these statements, {asked} {YES_NO}"
        rows.append(row(prompt, yes_no_regex(answer, [a, b, c]), "logic", "reasoning", "regex", difficulty))

    # number sequences: next term
    def seq_row(terms: list[int], nxt: int, difficulty: str) -> None:
        shown = ", ".join(str(t) for t in terms)
        # no trailing ", ...": it invites the model to go on listing terms instead of answering
        prompt = f"What is the next number in the sequence {shown}? {NUMBER_ONLY}"
        if any(r["prompt"] == prompt for r in rows):
            return  # redraw (see until)
        rows.append(row(prompt, str(nxt), "logic", "reasoning", "numeric", difficulty))

    for _ in until(rows, 7):  # easy: arithmetic progressions
        start, step = rng.randint(1, 20), rng.randint(2, 10)
        terms = [start + step * i for i in range(5)]
        seq_row(terms[:4], terms[4], "easy")
    base = len(rows)
    for _ in until(rows, 7):  # medium: decreasing progressions and doubling/tripling, alternately
        if (len(rows) - base) % 2 == 0:
            step = rng.randint(3, 9)
            start = step * 6 + rng.randint(1, 30)
            terms = [start - step * k for k in range(5)]
        else:
            ratio, start = rng.choice([2, 3]), rng.randint(1, 5)
            terms = [start * ratio**k for k in range(5)]
        seq_row(terms[:4], terms[4], "medium")
    base = len(rows)
    for _ in until(rows, 6):  # hard: squares, Fibonacci-like, growing differences, in turn
        kind = (len(rows) - base) % 3
        if kind == 0:
            s = rng.randint(1, 8)
            terms = [(s + k) ** 2 for k in range(6)]
        elif kind == 1:
            a, b = rng.randint(1, 5), rng.randint(2, 7)
            terms = [a, b]
            while len(terms) < 7:
                terms.append(terms[-1] + terms[-2])
        else:
            start, diff = rng.randint(1, 10), rng.randint(1, 4)
            terms = [start]
            while len(terms) < 6:
                terms.append(terms[-1] + diff + len(terms) - 1)
        seq_row(terms[:-1], terms[-1], "hard")
    return rows


# ---------------------------------------------------------------------------------------------
# strings (generated)
# ---------------------------------------------------------------------------------------------

SHORT_WORDS = ["cat", "dog", "sun", "map", "cup", "tree", "book", "lamp", "fish", "bird", "rain", "moon", "star",
               "milk", "door", "road", "ship", "frog", "king", "leaf"]
MEDIUM_WORDS = ["garden", "planet", "silver", "window", "orange", "basket", "rocket", "pencil", "candle", "forest",
                "bridge", "monkey", "jacket", "winter", "doctor", "guitar"]
# Words with a letter that occurs three or more times, for the hard letter-count items.
REPEAT_WORDS = ["strawberry", "banana", "mississippi", "bookkeeper", "assessment", "possession", "engineering",
                "independence", "pepperoni", "parallel", "cinnamon", "tomorrow", "successful", "committee"]
LONG_WORDS = ["elephant", "computer", "mountain", "umbrella", "dinosaur", "sandwich", "hospital", "keyboard",
              "chocolate", "butterfly", "adventure", "telephone", "strawberry", "watermelon", "basketball",
              "helicopter", "newspaper", "restaurant", "television", "vegetable"]
# A tiny grammar for the word-count sentences, so they read as real sentences.
SUBJECTS = ["dog", "cat", "farmer", "teacher", "child", "bird", "baker", "sailor", "horse", "doctor"]
ADJECTIVES = ["small", "old", "happy", "tired", "young", "quiet", "brave", "busy", "clever", "gentle"]
VERBS = ["ran", "sang", "slept", "waited", "danced", "walked", "rested", "played", "jumped", "laughed"]
ADVERBS = ["quietly", "slowly", "happily", "loudly", "calmly", "quickly"]
PLACES = ["bridge", "river", "house", "garden", "tree", "hill", "market", "station", "lake", "fence"]
PREPOSITIONS = ["near", "under", "behind", "beside", "across", "past"]
TIMES = ["yesterday", "today", "last night", "every morning", "after the long storm", "before the sun rose"]
NAMES = ["Maria", "Tom", "Lena", "Omar", "Priya", "Sam", "Noah", "Yuki"]
PHRASE_WORDS = ["quick", "brown", "jumping", "over", "lazy", "happy", "golden", "purple", "sunny", "winter", "silent",
                "morning", "little", "yellow", "bright", "gentle", "river", "forest", "candle", "window", "marble",
                "velvet", "hungry", "orange", "kitten", "dragon", "pepper", "turtle"]


def gen_strings(rng: random.Random) -> list[Row]:
    rows: list[Row] = []

    # easy: uppercase (case-sensitive regex: the case change *is* the task)
    for word in rng.sample(MEDIUM_WORDS + SHORT_WORDS, 10):
        rows.append(row(f"Write the word \"{word}\" in uppercase letters. {UPPERCASE_ONLY}",
                        rf"(?-i:\b{word.upper()}\b)", "strings", "chat", "regex", "easy"))

    def short_sentence() -> str:  # 3 to 5 words
        return rng.choice([
            f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(ADVERBS)}.",
            f"The {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ADVERBS)}.",
            f"The {rng.choice(ADJECTIVES)} {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ADVERBS)}.",
        ])

    def long_sentence() -> str:  # 10 to 16 words
        head = f"The {rng.choice(ADJECTIVES)} {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ADVERBS)}"
        place = f"{rng.choice(PREPOSITIONS)} the {rng.choice(ADJECTIVES)} {rng.choice(PLACES)}"
        tail = rng.choice([f" {rng.choice(TIMES)}", f" with {rng.choice(NAMES)} {rng.choice(TIMES)}"])
        return f"{head} {place}{tail}."

    def word_count(difficulty: str) -> None:
        s = short_sentence() if difficulty == "easy" else long_sentence()
        rows.append(row(f"How many words are in this sentence: \"{s}\"? {NUMBER_ONLY}", str(len(s.split())),
                        "strings", "chat", "numeric", difficulty))

    def length(word: str, difficulty: str) -> None:
        rows.append(row(f"How many letters are in the word \"{word}\"? {NUMBER_ONLY}", str(len(word)), "strings",
                        "chat", "numeric", difficulty))

    def occurrences(word: str, difficulty: str) -> None:
        counts = {ch: word.count(ch) for ch in sorted(set(word))}
        if difficulty == "hard":
            best = max(counts.values())
            letter = rng.choice([ch for ch, n in counts.items() if n == best])
        else:
            letter = rng.choice(sorted(counts))
        rows.append(row(f"How many times does the letter \"{letter}\" appear in the word \"{word}\"? {NUMBER_ONLY}",
                        str(counts[letter]), "strings", "chat", "numeric", difficulty))

    def reverse(word: str, difficulty: str) -> None:
        rows.append(row(f"Write the word \"{word}\" with its letters in reverse order. {REVERSED_ONLY}", word[::-1],
                        "strings", "chat", "exact", difficulty))

    def initials(n: int, difficulty: str) -> None:
        words = rng.sample(PHRASE_WORDS, n)
        letters = [w[0] for w in words]
        # Accept "qbf", "QBF", "Q B F", "Q, B, F", "Q-B-F": separators are up to three non-word characters.
        pattern = r"\b" + r"\W{0,3}".join(letters) + r"\b"
        rows.append(row(f"Take the first letter of each word in \"{' '.join(words)}\" and write them together as one "
                        f"string. {LETTERS_ONLY}", pattern, "strings", "chat", "regex", difficulty))

    for _ in range(5):
        word_count("easy")
    for word in rng.sample(SHORT_WORDS, 5):
        length(word, "easy")
    for word in rng.sample(LONG_WORDS, 5):
        length(word, "medium")
    for word in rng.sample(LONG_WORDS, 5):
        occurrences(word, "medium")
    for word in rng.sample([w for w in SHORT_WORDS + MEDIUM_WORDS if 4 <= len(w) <= 6 and w != w[::-1]], 6):
        reverse(word, "medium")
    for _ in range(4):
        initials(3, "medium")
    for _ in range(5):
        word_count("hard")
    for word in rng.sample(REPEAT_WORDS, 5):
        occurrences(word, "hard")
    for word in rng.sample(LONG_WORDS, 6):
        reverse(word, "hard")
    for _ in range(4):
        initials(rng.randint(5, 6), "hard")
    rng.shuffle(rows)
    return rows


# ---------------------------------------------------------------------------------------------

DOMAINS = [
    ("arithmetic", "arith", gen_arithmetic),
    ("units", "units", gen_units),
    ("knowledge", "know", gen_knowledge),
    ("science_mc", "sci", gen_science_mc),
    ("logic", "logic", gen_logic),
    ("strings", "str", gen_strings),
]


def generate(seed: int = DEFAULT_SEED) -> list[Row]:
    rows: list[Row] = []
    for index, (domain, prefix, generator) in enumerate(DOMAINS):
        # One RNG per domain (derived from the seed) so editing one domain leaves the others unchanged.
        rng = random.Random(f"{seed}:{domain}")
        domain_rows = generator(rng)
        for number, item in enumerate(domain_rows, start=1):
            assert item["domain"] == domain
            rows.append({"id": f"{prefix}-{number:04d}", **item})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    rows = generate(args.seed)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate ids"
    prompts = [r["prompt"] for r in rows]
    assert len(prompts) == len(set(prompts)), "duplicate prompts"
    with args.output.open("w", encoding="utf-8", newline="\n") as handle:
        for item in rows:
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} queries to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
