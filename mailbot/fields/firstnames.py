"""A short list of common given names (English, German, French, Spanish, Italian, Dutch,
Portuguese, Polish, Turkish and a few more) for the capitalised-token name heuristic.

It is a hint, not a gazetteer: a name not listed here is still found through the From
header, greetings, sign-offs and "my name is". Names that are also everyday English words
("Will", "May", "Mark", "Grant", "Joy") are left out on purpose.
"""

from __future__ import annotations

FIRST_NAMES = frozenset(
    """
    Aaron Abigail Adam Adrian Ahmed Aisha Alan Albert Alberto Alejandro Alessandro Alex
    Alexander Alexandra Alexis Ali Alice Alicia Alina Alison Amanda Amelia Amy Ana Andrea
    Andreas Andrew Andrés Angela Anja Anke Anna Anne Annika Anthony Antoine Antonio Arjen
    Arthur Astrid Ayşe Barbara Beatriz Ben Benjamin Bernd Bettina Birgit Brian Bruno
    Camille Carla Carlos Carmen Carol Caroline Catherine Charlotte Chiara Chloé Chloe
    Christian Christina Christine Christoph Christopher Claire Claudia Clara Daniel Daniela
    Daniele David Dennis Diana Diego Dirk Dominik Dorothea Dylan Edward Elena Eleni Elias
    Elif Elisa Elisabeth Elizabeth Ella Emilia Emily Emma Emre Eric Erik Esther Eva Fabian
    Fatima Felix Fernando Finn Florian Francesca Francesco Francisco François Frederik
    Gabriel Gabriele Gareth George Georg Gerhard Giorgos Giovanni Giulia Giuseppe Greta
    Guillaume Hannah Hans Harald Harry Heike Heinz Helen Helena Helga Hendrik Henrik Hugo
    Ian Ibrahim Inês Ines Ingrid Isabel Isabella Ivan Jakob Jacob James Jan Jana Jane Jason
    Javier Jean Jennifer Jens Jessica Joana Joanna Joe Johan Johanna John Jonas Jonathan
    Jorge José Joseph Joshua Juan Judith Julia Julian Julie Jürgen Jurgen Kai Karen Karim
    Karin Karl Katarzyna Kate Katharina Katrin Kevin Klaus Krzysztof Lara Laura Lea Leila
    Lena Leon Leonie Liam Lina Linda Lisa Lorenzo Louis Louise Luca Lucas Lucia Lucía Luis
    Lukas Maarten Magdalena Maja Manuel Marc Marcel Marco Marcus Margaret Maria María Marie
    Marina Mario Marion Markus Marta Martin Martina Mary Mateo Mathias Matteo Matthew
    Matthias Max Maximilian Mehmet Melanie Mia Michael Michaela Michel Michelle Miguel
    Mohamed Mohammed Monika Nadia Natalia Nathalie Nicolas Nicole Niklas Nils Noah Nora
    Olga Oliver Olivia Omar Oscar Pablo Paolo Patricia Patrick Paul Paula Pedro Peter
    Petra Philipp Pierre Pieter Piotr Rachel Rafael Ralf Raquel Rebecca Ricardo Richard
    Robert Roberto Rosa Ruth Sabine Sabrina Samuel Sandra Sara Sarah Sebastian Sergio
    Simon Simone Sofia Sophie Stefan Stefanie Stephanie Steven Susanne Sven Svenja Thomas
    Tim Timo Tobias Tom Tomasz Torsten Ursula Valentina Vanessa Victor Victoria Vincent
    Wolfgang Yannick Yusuf Zoe Zoé Zeynep Agnieszka Anouk Bram Daan Fleur Femke Lotte
    Sanne Thijs Wouter Ruben Jesús Lucía Sofía Valeria Camila Santiago Mercedes
    Dolores Nuno João Tiago Rui Mariana Beatrice Federica Alessia Gianluca Stefano Aylin
    Murat Kemal Priya Rahul Anil Hiroshi Yuki Kenji Sergei Dmitri Natasha
    Ekaterina Ole Lars Anders Kari Ingrid Freya Siobhan Niamh Sean Connor Declan
    """.split()  # noqa: SIM905 (a word list reads best as prose)
)
