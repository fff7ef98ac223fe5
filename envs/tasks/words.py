"""Word pools the bundled tasks draw their names, labels and items from."""

from __future__ import annotations

FIRST_NAMES = (
    "alice", "bruno", "chen", "dana", "emil", "fatima", "goran", "hana", "ivan", "julia",
    "kofi", "lena", "marco", "nadia", "omar", "priya", "quinn", "rosa", "sven", "tariq",
)
LAST_NAMES = (
    "Lopez", "Novak", "Okafor", "Schmidt", "Tanaka", "Rossi", "Silva", "Kowalski", "Nguyen",
    "Dubois", "Haddad", "Larsen", "Moreau", "Petrov", "Ibrahim", "Costa",
)
CITIES = (
    "Lyon", "Porto", "Graz", "Tartu", "Ghent", "Malmo", "Bergen", "Split", "Turin", "Bilbao",
    "Leeds", "Krakow", "Aarhus", "Brno", "Cork",
)
COUNTRIES = (
    "Austria", "Belgium", "Canada", "Denmark", "Estonia", "Finland", "Greece", "Ireland",
    "Japan", "Kenya", "Mexico", "Norway", "Portugal", "Spain",
)
INTERESTS = ("Music", "Sports", "Travel", "Cooking", "Science", "Art", "Gaming", "Films")
PRODUCTS = (
    "Desk lamp", "Notebook", "Water bottle", "Backpack", "Headphones", "Coffee mug", "Pencil set",
    "USB cable", "Plant pot", "Umbrella", "Wall clock", "Phone stand", "Tea kettle", "Yoga mat",
)
MENU_WORDS = (
    "File", "Edit", "View", "Insert", "Format", "Tools", "Window", "Help", "Data", "Share",
)
MENU_ITEMS = (
    "New", "Open", "Save", "Export", "Import", "Print", "Recent", "Settings", "Layout", "Zoom",
    "Theme", "Search", "History", "Share", "Templates", "Sort", "Filter", "Convert",
)
MENU_LEAVES = (
    "PDF", "Word", "Text", "HTML", "CSV", "Image", "Markdown", "JSON", "Small", "Medium",
    "Large", "Light", "Dark", "Today", "Last week", "Email", "Link", "Archive",
)
TAB_NAMES = ("General", "Billing", "Privacy", "Security", "Email", "Devices", "Team", "Storage")
SETTING_NAMES = (
    "Notifications", "Auto-pay", "Two-step login", "Weekly digest", "Public profile",
    "Sync contacts", "Dark mode", "Location access", "Read receipts", "Beta features",
)
SEARCH_KINDS = ("people", "books", "recipes")
BOOK_WORDS = ("River", "Glass", "Winter", "Garden", "Silent", "Iron", "Paper", "Golden", "Hidden", "Salt")
BOOK_NOUNS = ("House", "Road", "Island", "Letters", "Machine", "Harbour", "Orchard", "Clock")
RECIPE_WORDS = ("Lemon", "Spicy", "Roast", "Green", "Smoky", "Honey", "Garlic", "Creamy")
RECIPE_NOUNS = ("Chicken", "Soup", "Salad", "Pasta", "Curry", "Tart", "Risotto", "Stew")
CHOICE_SETS = {
    "Language": ("English", "German", "French", "Spanish", "Italian", "Dutch"),
    "Theme": ("Light", "Dark", "Sepia", "High contrast", "Ocean"),
    "Time zone": ("UTC", "London", "Berlin", "New York", "Tokyo", "Sydney"),
}
