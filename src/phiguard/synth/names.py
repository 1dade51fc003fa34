"""Built-in name and place pools for the synthetic hospital.

The pools are ordered by how common each entry is, and samplers weight them with a
Zipf-like curve: a real catchment area has many Smiths and Garcias, and snooping
detection that flags every shared surname would be useless.  Places are fictional
and postal codes sit in the never-assigned US range 00000-00499, so no generated
address can belong to a real person.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Final

SURNAMES: Final[tuple[str, ...]] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
    "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson",
    "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker",
    "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell",
    "Carter", "Roberts", "Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker",
    "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris", "Morales", "Murphy",
    "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson", "Bailey",
    "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson", "Watson",
    "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz",
    "Hughes", "Price", "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long",
    "Ross", "Foster", "Jimenez", "Powell", "Jenkins", "Perry", "Russell", "Sullivan",
    "Bell", "Coleman", "Butler", "Henderson", "Barnes", "Gonzales", "Fisher",
    "Vasquez", "Simmons", "Romero", "Jordan", "Patterson", "Alexander", "Hamilton",
    "Graham", "Reynolds", "Griffin", "Wallace", "Moreno", "West", "Cole", "Hayes",
    "Bryant", "Herrera", "Gibson", "Ellis", "Tran", "Medina", "Aguilar", "Stevens",
    "Murray", "Ford", "Castro", "Marshall", "Owens", "Harrison", "Fernandez",
    "McDonald", "Woods", "Washington", "Kennedy", "Wells", "Vargas", "Henry", "Chen",
    "Freeman", "Webb", "Tucker", "Guzman", "Burns", "Crawford", "Olson", "Simpson",
    "Porter", "Hunter", "Gordon", "Mendez", "Silva", "Shaw", "Snyder", "Mason",
    "Dixon", "Munoz", "Hunt", "Hicks", "Holmes", "Palmer", "Wagner", "Black",
    "Robertson", "Boyd", "Rose", "Stone", "Salazar", "Fox", "Warren", "Mills",
    "Meyer", "Rice", "Schmidt", "Garza", "Daniels", "Ferguson", "Nichols",
    "Stephens", "Soto", "Weaver", "Ryan", "Gardner", "Payne", "Grant", "Dunn",
    "Kelley", "Spencer", "Hawkins", "Arnold", "Pierce", "Vazquez", "Hansen",
    "Peters", "Santos", "Hart", "Bradley", "Knight", "Elliott", "Cunningham",
    "Duncan", "Armstrong", "Hudson", "Carroll", "Lane", "Riley", "Andrews",
    "Alvarado", "Ray", "Delgado", "Berry", "Perkins", "Hoffman", "Johnston",
    "Matthews", "Pena", "Richards", "Contreras", "Willis", "Carpenter", "Lawrence",
    "Sandoval", "Guerrero", "George", "Chapman", "Rios", "Estrada", "Ortega",
    "Watkins", "Greene", "Nunez", "Wheeler", "Valdez", "Harper", "Burke", "Larson",
    "Santiago", "Maldonado", "Morrison", "Franklin", "Carlson", "Austin", "Dominguez",
    "Carr", "Lawson", "Jacobs", "Obrien", "Lynch", "Singh", "Vega", "Bishop",
    "Montgomery", "Oliver", "Jensen", "Harvey", "Williamson", "Gilbert", "Dean",
    "Sims", "Espinoza", "Howell", "Li", "Wong", "Reid", "Hanson", "Le", "McCoy",
    "Garrett", "Burton", "Fuller", "Wang", "Weber", "Welch", "Rojas", "Lucas",
    "Marquez", "Fields", "Park", "Yang", "Little", "Banks", "Padilla", "Day",
    "Walsh", "Bowman", "Schultz", "Luna", "Fowler", "Mejia", "Davidson", "Acosta",
    "Brewer", "May", "Holland", "Juarez", "Newman", "Pearson", "Curtis", "Cortez",
    "Douglas", "Schneider", "Joseph", "Barrett", "Navarro", "Figueroa", "Keller",
    "Avila", "Wade", "Molina", "Stanley", "Hopkins", "Campos", "Barnett", "Bates",
    "Chambers", "Caldwell", "Beck", "Lambert", "Miranda", "Byrd", "Craig", "Ayala",
    "Lowe", "Frazier", "Powers", "Neal", "Leonard", "Gregory", "Carrillo", "Sutton",
    "Fleming", "Rhodes", "Shelton", "Schwartz", "Norris", "Jennings", "Watts",
    "Duran", "Walters", "Cohen", "McDaniel", "Moran", "Parks", "Steele", "Vaughn",
    "Becker", "Holt", "Deleon", "Barker", "Terry", "Hale", "Leon", "Hail", "Benson",
    "Haynes", "Horton", "Miles", "Lyons", "Pham", "Graves", "Bush", "Thornton",
    "Wolfe", "Warner", "Cabrera", "McKinney", "Mann", "Zimmerman", "Dawson", "Lara",
    "Fletcher", "Page", "McCarthy", "Love", "Robles", "Cervantes", "Solis", "Erickson",
    "Reeves", "Chang", "Klein", "Salinas", "Fuentes", "Baldwin", "Daniel", "Simon",
    "Velasquez", "Hardy", "Higgins", "Aguirre", "Lin", "Cummings", "Chandler",
    "Sharp", "Barber", "Bowen", "Ochoa", "Dennis", "Robbins", "Liu", "Ramsey",
    "Francis", "Griffith", "Paul", "Blair", "Oconnor", "Cardenas", "Pacheco",
    "Cross", "Calderon", "Quinn", "Moss", "Swanson", "Chan", "Rivas", "Khan",
    "Rodgers", "Serrano", "Fitzgerald", "Rosales", "Stevenson", "Christensen",
    "Manning", "Gill", "Curry", "McLaughlin", "Harmon", "McGee", "Gross", "Doyle",
    "Garner", "Newton", "Burgess", "Reese", "Walton", "Blake", "Trujillo", "Adkins",
    "Brady", "Goodman", "Roman", "Webster", "Goodwin", "Fischer", "Huang", "Potter",
    "Delacruz", "Montoya", "Todd", "Wu", "Hines", "Mullins", "Castaneda", "Malone",
    "Cannon", "Tate", "Mack", "Sherman", "Hubbard", "Hodges", "Zhang", "Guerra",
    "Wolf", "Valencia", "Saunders", "Franco", "Rowe", "Gallagher", "Farmer",
    "Hammond", "Hampton", "Townsend", "Ingram", "Wise", "Gallegos", "Clarke",
    "Barton", "Schroeder", "Maxwell", "Waters", "Logan", "Camacho", "Strickland",
    "Norman", "Person", "Colon", "Parsons", "Frank", "Harrington", "Glover",
    "Osborne", "Buchanan", "Casey", "Floyd", "Patton", "Ibarra", "Ball", "Tyler",
    "Suarez", "Bowers", "Orozco", "Salas", "Cobb", "Gibbs", "Andrade", "Bauer",
    "Conner", "Moody", "Escobar", "McGuire", "Lloyd", "Mueller", "Hartman", "French",
    "Kramer", "McBride", "Pope", "Lindsey", "Velazquez", "Norton", "McCormick",
    "Sparks", "Flynn", "Yates", "Hogan", "Marsh", "Macias", "Villanueva", "Zamora",
    "Pratt", "Stokes", "Owen", "Ballard", "Lang", "Brock", "Villarreal", "Charles",
    "Drake", "Barrera", "Cain", "Patrick", "Pineda", "Burnett", "Mercado", "Santana",
    "Shepherd", "Bautista", "Ali", "Shaffer", "Lamb", "Trevino", "McKenzie", "Hess",
    "Beil", "Olsen", "Cochran", "Morton", "Nash", "Wilkins", "Petersen", "Briggs",
    "Shah", "Roth", "Nicholson", "Holloway", "Lozano", "Rangel", "Flowers", "Hoover",
    "Short", "Arias", "Mora", "Valenzuela", "Bryan", "Meyers", "Weiss", "Underwood",
    "Bass", "Greer", "Summers", "Houston", "Carson", "Morrow", "Clayton", "Whitaker",
    "Decker", "Yoder", "Collier", "Zuniga", "Carey", "Wilcox", "Melendez", "Poole",
    "Roberson", "Larsen", "Conley", "Davenport", "Copeland", "Massey", "Lam", "Huff",
    "Rocha", "Cameron", "Jefferson", "Hood", "Monroe", "Anthony", "Pittman", "Huynh",
    "Randall", "Singleton", "Kirk", "Combs", "Mathis", "Christian", "Skinner",
    "Bradford", "Richard", "Galvan", "Wall", "Boone", "Kirby", "Wilkinson", "Bridges",
    "Bruce", "Atkinson", "Velez", "Meza", "Roy", "Vincent", "York", "Hodge", "Villa",
    "Abbott", "Allison", "Tapia", "Gates", "Chase", "Sosa", "Sweeney", "Farrell",
    "Wyatt", "Dalton", "Horn", "Barron", "Phelps", "Yu", "Dickerson", "Heath",
    "Foley", "Atkins", "Mathews", "Bonilla", "Acevedo", "Benitez", "Zavala",
    "Hensley", "Glenn", "Cisneros", "Harrell", "Shields", "Rubio", "Huffman",
    "Choi", "Boyer", "Garrison", "Arroyo", "Bond", "Kane", "Hancock", "Callahan",
    "Dillon", "Cline", "Wiggins", "Grimes", "Arellano", "Melton", "Oneill",
    "Savage", "Ho", "Beltran", "Pitts", "Parrish", "Ponce", "Rich", "Booth",
    "Koch", "Golden", "Ware", "Brennan", "McDowell", "Marks", "Cantu", "Humphrey",
    "Baxter", "Sawyer", "Clay", "Tanner", "Hutchinson", "Kaur", "Berg", "Wiley",
    "Gilmore", "Russo", "Villegas", "Hobbs", "Keith", "Wilkerson", "Ahmed",
    "Beard", "McClain", "Montes", "Mata", "Rosario", "Vang", "Walter", "Henson",
    "Oneal", "Mosley", "McClure", "Beasley", "Stephenson", "Snow", "Huerta",
    "Preston", "Vance", "Barry", "Johns", "Eaton", "Blackwell", "Dyer", "Prince",
    "Macdonald", "Solomon", "Guevara", "Stafford", "English", "Hurst", "Woodard",
    "Cortes", "Shannon", "Kemp", "Nolan", "McCullough", "Merritt", "Murillo",
    "Moon", "Salgado", "Strong", "Kline", "Cordova", "Barajas", "Roach", "Rosas",
    "Winters", "Jacobson", "Lester", "Knox", "Bullock", "Kerr", "Leach", "Meadows",
    "Orr", "Davila", "Whitehead", "Pruitt", "Kent", "Conway", "McKee", "Barr",
    "David", "Dejesus", "Marin", "Berger", "McIntyre", "Blankenship", "Gaines",
    "Palacios", "Cuevas", "Bartlett", "Durham", "Dorsey", "McCall", "Odonnell",
    "Stein", "Browning", "Stout", "Lowery", "Sloan", "McLean", "Hendricks",
    "Calhoun", "Sexton", "Chung", "Gentry", "Hull", "Duarte", "Ellison", "Nielsen",
    "Gillespie", "Buck", "Middleton", "Sellers", "Leblanc", "Esparza", "Hardin",
    "Bradshaw", "McIntosh", "Howe", "Livingston", "Frost", "Glass", "Morse",
    "Knapp", "Herman", "Stark", "Bravo", "Noble", "Spears", "Weeks", "Corona",
    "Frederick", "Buckley", "McFarland", "Hebert", "Enriquez", "Hickman", "Quintero",
    "Randolph", "Schaefer", "Walls", "Trejo", "House", "Reilly", "Pennington",
    "Michael", "Conrad", "Giles", "Benjamin", "Crosby", "Fitzpatrick", "Donovan",
    "Mays", "Mahoney", "Valentine", "Raymond", "Medrano", "Hahn", "McMillan",
    "Small", "Bentley", "Felix", "Peck", "Lucero", "Boyle", "Hanna", "Pace",
    "Rush", "Hurley", "Harding", "McConnell", "Bernal", "Nava", "Ayers", "Everett",
    "Ventura", "Avery", "Pugh", "Mayer", "Bender", "Shepard", "McMahon", "Landry",
    "Case", "Sampson", "Moses", "Magana", "Blackburn", "Dunlap", "Gould", "Duffy",
    "Vaughan", "Herring", "McKay", "Espinosa", "Rivers", "Farley", "Bernard",
    "Ashley", "Friedman", "Potts", "Truong", "Costa", "Correa", "Blevins", "Nixon",
    "Clements", "Fry", "Delarosa", "Best", "Benton", "Lugo", "Portillo", "Dougherty",
    "Crane", "Haley", "Phan", "Villalobos", "Blanchard", "Horne", "Finley", "Quintana",
    "Lynn", "Esquivel", "Bean", "Dodson", "Mullen", "Xiong", "Hayden", "Cano",
    "Levy", "Huber", "Richmond", "Moyer", "Lim", "Frye", "Sheppard", "McCarty",
    "Avalos", "Booker", "Waller", "Parra", "Woodward", "Jaramillo", "Krueger",
    "Rasmussen", "Brandt", "Peralta", "Donaldson", "Stuart", "Faulkner", "Maynard",
    "Galindo", "Coffey", "Estes", "Sanford", "Burch", "Maddox", "Vo", "Oconnell",
    "Vu", "Andersen", "Spence", "McPherson", "Church", "Schmitt", "Stanton", "Leal",
    "Cherry", "Compton", "Dudley", "Sierra", "Pollard", "Alfaro", "Hester", "Proctor",
    "Lu", "Hinton", "Novak", "Good", "Madden", "McCann", "Terrell", "Jarvis", "Dickson",
    "Reyna", "Cantrell", "Mayo", "Branch", "Hendrix", "Rollins", "Rowland", "Whitney",
    "Duke", "Odom", "Daugherty", "Travis", "Tang", "Archer",
)  # fmt: skip

FEMALE_GIVEN: Final[tuple[str, ...]] = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica",
    "Sarah", "Karen", "Lisa", "Nancy", "Betty", "Sandra", "Margaret", "Ashley",
    "Kimberly", "Emily", "Donna", "Michelle", "Carol", "Amanda", "Melissa", "Deborah",
    "Stephanie", "Dorothy", "Rebecca", "Sharon", "Laura", "Cynthia", "Amy", "Kathleen",
    "Angela", "Shirley", "Brenda", "Emma", "Anna", "Pamela", "Nicole", "Samantha",
    "Katherine", "Christine", "Helen", "Debra", "Rachel", "Carolyn", "Janet", "Maria",
    "Catherine", "Heather", "Diane", "Olivia", "Julie", "Joyce", "Victoria", "Ruth",
    "Virginia", "Lauren", "Kelly", "Christina", "Joan", "Evelyn", "Judith", "Andrea",
    "Hannah", "Megan", "Cheryl", "Jacqueline", "Martha", "Madison", "Teresa", "Gloria",
    "Sara", "Janice", "Ann", "Kathryn", "Abigail", "Sophia", "Frances", "Jean",
    "Alice", "Judy", "Isabella", "Julia", "Grace", "Amber", "Denise", "Danielle",
    "Marilyn", "Beverly", "Charlotte", "Natalie", "Theresa", "Diana", "Brittany",
    "Doris", "Kayla", "Alexis", "Lori", "Marie", "Ava", "Mia", "Chloe", "Zoe",
    "Aaliyah", "Priya", "Mei", "Fatima", "Lucia", "Ximena", "Aisha", "Yuki", "Leah",
    "Nora", "Camila", "Valentina", "Elena", "Rosa", "Ana", "Carmen", "Guadalupe",
)  # fmt: skip

MALE_GIVEN: Final[tuple[str, ...]] = (
    "James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph",
    "Thomas", "Christopher", "Charles", "Daniel", "Matthew", "Anthony", "Mark",
    "Donald", "Steven", "Andrew", "Paul", "Joshua", "Kenneth", "Kevin", "Brian",
    "George", "Timothy", "Ronald", "Jason", "Edward", "Jeffrey", "Ryan", "Jacob",
    "Gary", "Nicholas", "Eric", "Jonathan", "Stephen", "Larry", "Justin", "Scott",
    "Brandon", "Benjamin", "Samuel", "Gregory", "Alexander", "Patrick", "Frank",
    "Raymond", "Jack", "Dennis", "Jerry", "Tyler", "Aaron", "Jose", "Adam", "Nathan",
    "Henry", "Zachary", "Douglas", "Peter", "Kyle", "Noah", "Ethan", "Jeremy",
    "Walter", "Christian", "Keith", "Roger", "Terry", "Austin", "Sean", "Gerald",
    "Carl", "Harold", "Dylan", "Arthur", "Lawrence", "Jordan", "Jesse", "Bryan",
    "Billy", "Bruce", "Gabriel", "Joe", "Logan", "Alan", "Juan", "Albert", "Willie",
    "Elijah", "Wayne", "Randy", "Vincent", "Mason", "Roy", "Ralph", "Bobby",
    "Russell", "Bradley", "Philip", "Eugene", "Liam", "Lucas", "Mateo", "Luis",
    "Carlos", "Miguel", "Ahmed", "Omar", "Raj", "Wei", "Hiroshi", "Minh", "Ivan",
    "Diego", "Santiago", "Hector", "Jamal", "Malik", "Darnell", "Tariq", "Arjun",
)  # fmt: skip

STREET_NAMES: Final[tuple[str, ...]] = (
    "Maple", "Oak", "Pine", "Cedar", "Elm", "Willow", "Birch", "Spruce", "Chestnut",
    "Walnut", "Hickory", "Poplar", "Magnolia", "Sycamore", "Aspen", "Juniper",
    "Laurel", "Holly", "Dogwood", "Cypress", "Linden", "Alder", "Hawthorn", "Locust",
    "Mulberry", "Redwood", "Sequoia", "Beech", "Hemlock", "Larch", "Washington",
    "Lincoln", "Jefferson", "Madison", "Monroe", "Jackson", "Adams", "Franklin",
    "Hamilton", "Grant", "Harrison", "Cleveland", "Garfield", "Taylor", "Tyler",
    "Church", "Mill", "Main", "High", "Park", "Lake", "River", "Hill", "Valley",
    "Meadow", "Forest", "Spring", "Sunset", "Sunrise", "Ridge", "Highland", "Prospect",
    "Orchard", "Garden", "Market", "School", "College", "Union", "Center", "Bridge",
    "Harbor", "Bay", "Summit", "Fairview", "Pleasant", "Green", "Cherry", "Rose",
    "Lilac", "Ivy", "Heather", "Clover", "Fox", "Deer", "Eagle", "Hawk", "Robin",
    "Sparrow", "Wren", "Heron", "Crescent", "Brook", "Creek", "Stone", "Granite",
    "Quarry", "Canal", "Station", "Railroad", "Academy", "Chapel", "Liberty",
    "Independence", "Franklin Mill", "Kings", "Queens", "Windsor", "Dover",
    "Bristol", "Kent", "Essex", "Sussex", "Surrey", "Devon",
)  # fmt: skip

STREET_SUFFIXES: Final[tuple[str, ...]] = (
    "Street", "Avenue", "Road", "Lane", "Drive", "Court", "Way", "Place",
    "Boulevard", "Terrace",
)  # fmt: skip

CITIES: Final[tuple[str, ...]] = (
    "Ashford Falls", "Brookhaven Mills", "Cedar Hollow", "Dunmore Heights",
    "Elmsworth", "Fairhaven Glen", "Glenridge", "Harrowgate", "Ivywood",
    "Juniper Bluff", "Kestrel Bay", "Larkspur", "Millbrook Crossing", "Northvale",
    "Oakmere", "Pinecrest Landing", "Quarry Hill", "Riverbend", "Stonebridge",
    "Thornfield", "Upton Vale", "Westmere", "Willowmere", "Yarrow Point", "Zephyr Creek",
)  # fmt: skip

STATE: Final = "ZZ"
"""Not a real USPS state code, for the same reason the postal codes are fictional."""

POSTAL_CODES_PER_CITY: Final = 20


def postal_code(city_index: int, zone: int) -> str:
    """Postal codes stay below 00500, a range the USPS has never assigned."""
    return f"{city_index * POSTAL_CODES_PER_CITY + zone % POSTAL_CODES_PER_CITY:05d}"


def zipf_cum_weights(n: int, exponent: float) -> list[float]:
    """Cumulative weights let ``random.choices`` sample in O(log n) per draw."""
    return list(itertools.accumulate(1.0 / (rank**exponent) for rank in range(1, n + 1)))


class NameSampler:
    """Draws surnames and given names with a Zipf-like frequency from one ``Random``."""

    SURNAME_EXPONENT: Final = 0.7
    GIVEN_EXPONENT: Final = 0.6

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._surname_cum = zipf_cum_weights(len(SURNAMES), self.SURNAME_EXPONENT)
        self._female_cum = zipf_cum_weights(len(FEMALE_GIVEN), self.GIVEN_EXPONENT)
        self._male_cum = zipf_cum_weights(len(MALE_GIVEN), self.GIVEN_EXPONENT)

    def surname(self) -> str:
        return _draw(self._rng, SURNAMES, self._surname_cum)

    def given(self, gender: str) -> str:
        if gender == "female" or (gender != "male" and self._rng.random() < 0.5):
            return _draw(self._rng, FEMALE_GIVEN, self._female_cum)
        return _draw(self._rng, MALE_GIVEN, self._male_cum)


def _draw(rng: random.Random, pool: Sequence[str], cum: list[float]) -> str:
    return rng.choices(pool, cum_weights=cum, k=1)[0]
