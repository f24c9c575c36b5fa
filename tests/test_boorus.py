import json
import time

import pytest

from pipeline.core.params import PipelineError
from pipeline.sources.scraping import LISTING_MAX_BYTES
from pipeline.web import boorus
from pipeline.web.boorus import (
    SITES,
    MarkupError,
    Post,
    danbooru_json_url,
    gelbooru_json_url,
    moebooru_json_url,
    moebooru_listing_url,
    parse_danbooru_json,
    parse_gelbooru_json,
    parse_moebooru_json,
    parse_moebooru_listing,
    register_calls,
)

PAGE_URL = "https://konachan.net/post?page=2&tags=barefoot"

# The Moebooru markup konachan.net serves: one post with its Post.register line,
# one without (parsed from the markup alone), one deleted post without a file link.
KONACHAN_PAGE = """<html><head><link rel="next" href="/post?page=3"></head><body>
<ul id="post-list-posts">
<li style="width: 160px;" id="p334664" class=" javascript-hide creator-id-181250 has-children">
  <div class="inner" style="width: 150px; height: 150px;">
    <a class="thumb" href="/post/show/334664">
      <img src="https://konachan.net/data/preview/66/22/66226821ea227bda9a55c2672a62b06e.jpg"
           alt="Rating: Safe Score: 0 Tags: barefoot candy User: someone" class="preview"
           title="Rating: Safe Score: 0 Tags: barefoot candy User: someone" width="150" height="106">
    </a>
  </div>
  <a class="directlink largeimg" href="https://konachan.net/image/66226821ea227bda9a55c2672a62b06e/Konachan.com%20-%20334664%20barefoot.png">
    <span class="directlink-res">1920 x 1357</span></a>
</li>
<li style="width: 160px;" id="p334663" class=" javascript-hide creator-id-5">
  <div class="inner"><a class="thumb" href="/post/show/334663">
    <img src="//konachan.net/data/preview/aa/bb/aabb.jpg"
         alt="Rating: Questionable Score: 3 Tags: blue_hair long_hair User: x" class="preview"></a></div>
  <a class="directlink smallimg" href="//konachan.net/jpeg/aabb/Konachan.com%20-%20334663.jpg?a=1&amp;b=2">
    <span class="directlink-res">1200 x 900</span></a>
</li>
<li id="p334662" class="flagged"><div class="inner"><a class="thumb" href="/post/show/334662">
  <img src="/deleted-preview.png" alt="Rating: Safe Score: 0 Tags: x User: y" class="preview"></a></div>
</li>
</ul>
<div id="paginator"><a class="next_page" rel="next" href="/post?page=3&amp;tags=barefoot">Next</a></div>
<script type="text/javascript">
Post.register({"id":334664,"tags":"barefoot candy dress","created_at":1640000000,"score":0,"md5":"66226821ea227bda9a55c2672a62b06e","file_size":2810001,"file_ext":"png","file_url":"https://konachan.net/image/66226821ea227bda9a55c2672a62b06e/Konachan.com%20-%20334664%20barefoot.png","preview_url":"https://konachan.net/data/preview/66/22/66226821ea227bda9a55c2672a62b06e.jpg","preview_width":150,"preview_height":106,"sample_url":"https://konachan.net/sample/66226821ea227bda9a55c2672a62b06e/Konachan.com%20-%20334664%20sample.jpg","sample_width":1500,"sample_height":1060,"jpeg_url":"https://konachan.net/jpeg/66226821ea227bda9a55c2672a62b06e/Konachan.com%20-%20334664%20barefoot.jpg","width":1920,"height":1357,"rating":"s","status":"active","parent_id":null,"has_children":true,"source":"","author":"someone"});
</script>
</body></html>"""


def test_konachan_listing():
    listing = parse_moebooru_listing(KONACHAN_PAGE, PAGE_URL)
    first, second = listing.posts
    assert first.id == 334664
    assert first.tags == ("barefoot", "candy", "dress")  # from Post.register, the reliable source
    assert first.md5 == "66226821ea227bda9a55c2672a62b06e" and first.rating == "safe"
    md5 = first.md5
    assert first.urls == {
        "preview": f"https://konachan.net/data/preview/66/22/{md5}.jpg",
        "sample": f"https://konachan.net/sample/{md5}/Konachan.com%20-%20334664%20sample.jpg",
        "original": f"https://konachan.net/image/{md5}/Konachan.com%20-%20334664%20barefoot.png"}
    # no Post.register line: everything comes from the markup; protocol-relative URL and &amp;
    assert second.id == 334663
    direct = "https://konachan.net/jpeg/aabb/Konachan.com%20-%20334663.jpg?a=1&b=2"
    assert second.urls == {"preview": "https://konachan.net/data/preview/aa/bb/aabb.jpg",
                           "sample": direct, "original": direct}
    assert second.tags == ("blue_hair", "long_hair")
    assert second.rating == "questionable" and second.md5 is None
    assert listing.without_file == 1 and listing.lowest_id == 334662
    assert listing.has_next


def test_file_kinds_fall_back_to_the_next_larger_file():
    post = Post(1, {"preview": "p", "original": "o"}, md5="m")
    assert [post.url(kind) for kind in ("preview", "sample", "original")] == ["p", "o", "o"]
    assert Post(2, {"original": "o"}).url("preview") == "o"


def test_only_the_original_is_checked_against_the_listed_md5():
    post = Post(1, {"preview": "p", "sample": "s", "original": "o"}, md5="m")
    assert post.expected_md5("o") == "m"
    assert post.expected_md5("s") is None and post.expected_md5("p") is None
    small = Post(1, {"sample": "o", "original": "o"}, md5="m")  # no sample of its own
    assert small.expected_md5(small.url("sample")) == "m"


def test_last_page_has_no_next():
    page = KONACHAN_PAGE.replace(
        '<a class="next_page" rel="next" href="/post?page=3&amp;tags=barefoot">Next</a>',
        '<span class="next_page disabled">Next</span>').replace('<link rel="next" href="/post?page=3">', "")
    assert not parse_moebooru_listing(page, PAGE_URL).has_next


def test_empty_result_page():
    listing = parse_moebooru_listing("<html><body><p>Nobody here but us chickens!</p></body></html>",
                                     PAGE_URL)
    assert listing.posts == [] and not listing.has_next


def test_changed_markup_names_url_and_element():
    with pytest.raises(MarkupError) as error:
        parse_moebooru_listing("<html><body><div class='posts'></div></body></html>", PAGE_URL)
    assert PAGE_URL in str(error.value) and "ul#post-list-posts" in str(error.value)
    changed = "<ul id='post-list-posts'><li class='post'><img></li></ul>"
    with pytest.raises(MarkupError, match=r"li#p<id>"):
        parse_moebooru_listing(changed, PAGE_URL)


# post.json as yande.re serves it: a bare array; protocol-relative URLs; a deleted post
YANDERE_JSON = json.dumps([
    {"id": 1200, "tags": "dress long_hair", "created_at": 1700000000, "score": 9,
     "md5": "c" * 32, "file_size": 4000000, "file_ext": "png",
     "file_url": "//files.yande.re/image/cccc/yande.re%201200.png",
     "preview_url": "//assets.yande.re/data/preview/cc/cc/" + "c" * 32 + ".jpg",
     "preview_width": 150, "preview_height": 100,
     "sample_url": "//files.yande.re/sample/cccc/yande.re%201200%20sample.jpg",
     "sample_width": 1500, "sample_height": 1000,
     "jpeg_url": "//files.yande.re/jpeg/cccc/yande.re%201200.jpg", "width": 3000, "height": 2000,
     "rating": "q", "status": "active", "parent_id": None, "has_children": False, "source": "",
     "author": "a"},
    {"id": 1199, "tags": "sky", "md5": "d" * 32, "rating": "e", "status": "deleted",
     "preview_url": "//assets.yande.re/deleted.png", "width": 10, "height": 10},
    {"id": 1198, "tags": "", "md5": "e" * 32, "rating": "s", "file_url": "/image/eeee/x.jpg",
     "sample_url": "/image/eeee/x.jpg", "preview_url": "/data/preview/ee/ee/e.jpg"},
])


def test_moebooru_json():
    url = "https://yande.re/post.json?limit=100&page=1&tags="
    listing = parse_moebooru_json(YANDERE_JSON, url)
    first, last = listing.posts
    assert first.id == 1200 and first.rating == "questionable" and first.md5 == "c" * 32
    assert first.tags == ("dress", "long_hair")
    assert first.urls["original"] == "https://files.yande.re/image/cccc/yande.re%201200.png"
    assert first.urls["sample"] == "https://files.yande.re/sample/cccc/yande.re%201200%20sample.jpg"
    assert first.urls["preview"].startswith("https://assets.yande.re/data/preview/cc/cc/")
    assert last.urls["sample"] == "https://yande.re/image/eeee/x.jpg" and last.rating == "safe"
    assert last.expected_md5(last.url("sample")) == "e" * 32  # no sample of its own
    assert listing.without_file == 1 and listing.has_next and listing.lowest_id == 1198
    empty = parse_moebooru_json("[]", url)
    assert empty.posts == [] and not empty.has_next


# posts.json as safebooru.donmai.us serves it; a post hidden from anonymous users has no
# md5 or file URLs
DANBOORU_JSON = json.dumps([
    {"id": 7001, "md5": "a" * 32, "rating": "g", "tag_string": "1girl solo touhou",
     "file_ext": "jpg", "file_size": 500000, "image_width": 2000, "image_height": 1500,
     "file_url": "https://cdn.donmai.us/original/aa/aa/" + "a" * 32 + ".jpg",
     "large_file_url": "https://cdn.donmai.us/sample/aa/aa/sample-" + "a" * 32 + ".jpg",
     "preview_file_url": "https://cdn.donmai.us/180x180/aa/aa/" + "a" * 32 + ".jpg",
     "is_deleted": False, "is_banned": False},
    {"id": 7000, "rating": "s", "tag_string": "1girl swimsuit", "file_ext": "png",
     "image_width": 800, "image_height": 600, "is_deleted": False, "is_banned": True},
    {"id": 6999, "md5": "b" * 32, "rating": "s", "tag_string": "swimsuit", "file_ext": "jpg",
     "file_url": "https://cdn.donmai.us/original/bb/bb/b.jpg",
     "large_file_url": "https://cdn.donmai.us/original/bb/bb/b.jpg",
     "preview_file_url": "https://cdn.donmai.us/180x180/bb/bb/b.jpg", "is_deleted": False},
    {"id": 6998, "md5": "f" * 32, "rating": "g", "tag_string": "sky", "is_deleted": True,
     "file_url": "https://cdn.donmai.us/original/ff/ff/f.jpg"},
])


def test_danbooru_json():
    listing = parse_danbooru_json(DANBOORU_JSON, "https://safebooru.donmai.us/posts.json?page=1")
    general, sensitive = listing.posts
    assert general.rating == "safe" and general.tags == ("1girl", "solo", "touhou")
    assert general.url("sample").endswith("/sample/aa/aa/sample-" + "a" * 32 + ".jpg")
    assert general.url("preview").endswith("/180x180/aa/aa/" + "a" * 32 + ".jpg")
    assert general.expected_md5(general.url("original")) == "a" * 32
    assert sensitive.rating == "questionable"  # Danbooru's "s" is sensitive, not safe
    assert listing.without_file == 2 and listing.lowest_id == 6998 and listing.has_next


def test_danbooru_error_object_names_url_and_message():
    url = "https://safebooru.donmai.us/posts.json?page=2"
    error = '{"success": false, "error": "Danbooru::Paginator::PaginationError", "message": "nope"}'
    with pytest.raises(MarkupError, match=r"posts\.json\?page=2: expected a JSON array.*nope"):
        parse_danbooru_json(error, url)
    with pytest.raises(MarkupError, match="not JSON"):
        parse_danbooru_json("<html>maintenance</html>", url)
    with pytest.raises(MarkupError, match="post objects with an id"):
        parse_danbooru_json('[{"post": {"id": 1}}]', url)


# the dapi as safebooru.org serves it: hash is the md5, image a file name, an empty sample_url
GELBOORU_JSON = json.dumps([
    {"id": 5100, "hash": "3" * 32, "image": "3af0.png", "directory": 5, "width": 1200,
     "height": 900, "rating": "general", "tags": " 1girl hat ", "score": 2, "source": "",
     "status": "active", "file_url": "https://safebooru.org/images/5/3af0.png",
     "sample_url": "", "preview_url": "https://safebooru.org/thumbnails/5/thumbnail_3af0.jpg"},
    {"id": 5099, "hash": "4" * 32, "image": "b1.jpg", "directory": "5", "rating": "sensitive",
     "tags": "swimsuit", "file_url": "https://safebooru.org/images/5/b1.jpg",
     "sample_url": "https://safebooru.org/samples/5/sample_b1.jpg",
     "preview_url": "https://safebooru.org/thumbnails/5/thumbnail_b1.jpg"},
    {"id": 5098, "hash": "5" * 32, "rating": "safe", "tags": "sky",
     "file_url": "https://safebooru.org/images/5/c.jpg"},
])


def test_gelbooru_json():
    url = "https://safebooru.org/index.php?page=dapi&s=post&q=index&json=1&pid=0"
    listing = parse_gelbooru_json(GELBOORU_JSON, url)
    general, sensitive, safe = listing.posts
    assert general.tags == ("1girl", "hat") and general.rating == "safe"
    assert general.url("sample") == "https://safebooru.org/images/5/3af0.png"  # empty sample_url
    assert general.expected_md5(general.url("sample")) == "3" * 32
    assert sensitive.rating == "questionable" and sensitive.url("sample").endswith("sample_b1.jpg")
    assert safe.rating == "safe" and safe.url("preview") == safe.urls["original"]
    assert parse_gelbooru_json("", url) == parse_gelbooru_json("[]", url)  # nothing matched
    assert not parse_gelbooru_json("", url).has_next
    wrapped = json.dumps({"@attributes": {"limit": 100, "offset": 0, "count": 3},
                          "post": json.loads(GELBOORU_JSON)})
    assert parse_gelbooru_json(wrapped, url) == listing
    assert parse_gelbooru_json('{"@attributes": {"count": 0}}', url).posts == []


def test_listing_urls():
    assert moebooru_listing_url("https://konachan.net/", "blue_hair rating:s", 3) == \
        "https://konachan.net/post?page=3&tags=blue_hair+rating%3As"
    assert moebooru_json_url("https://yande.re", "hat", 2) == \
        "https://yande.re/post.json?limit=100&page=2&tags=hat"
    assert gelbooru_json_url("https://safebooru.org", "hat", 1) == \
        "https://safebooru.org/index.php?page=dapi&s=post&q=index&json=1&limit=100&pid=0&tags=hat"


def test_danbooru_pages_by_number_to_1000_then_by_id():
    base = "https://safebooru.donmai.us"
    assert danbooru_json_url(base, "", 1000, 5000).endswith("/posts.json?limit=100&page=1000&tags=")
    assert danbooru_json_url(base, "", 1001, 4321).endswith("/posts.json?limit=100&page=b4321&tags=")
    with pytest.raises(PipelineError, match="scrape.first_page"):
        danbooru_json_url(base, "", 1001, None)


def test_sites_table():
    assert {name: site.default_url for name, site in SITES.items()} == {
        "demo": None, "konachan": "https://konachan.net", "yandere": "https://yande.re",
        "danbooru": "https://safebooru.donmai.us", "gelbooru": "https://safebooru.org"}
    assert SITES["konachan"].adapter("html").parse is parse_moebooru_listing
    assert SITES["yandere"].adapter("json").parse is parse_moebooru_json
    # Danbooru's listing HTML no longer carries file URLs: its API whatever scrape.api says
    assert SITES["danbooru"].adapter("html").parse is parse_danbooru_json
    assert SITES["gelbooru"].adapter("html").parse is parse_gelbooru_json


# Hostile pages: parsing stays linear, and a post in a shape no post has is skipped and named

def _best_cpu_time(parse, repeats: int = 5) -> float:
    """The least CPU time this thread spent on a few runs. CPU time does not count the time the
    machine gave to other work, so a busy or slow machine changes both sizes alike and their ratio
    stays the parser's own growth."""
    times = []
    for _ in range(repeats):
        started = time.thread_time()
        parse()
        times.append(time.thread_time() - started)
    return min(times)


def test_post_register_parsing_is_linear_on_a_hostile_page():
    """One long line of calls that never end the way a call line does: a lazy regex retried from
    each of them was quadratic (120 KB took 4 s). Four times the page must take about four times
    the work, far from the sixteen times a quadratic parse takes."""
    def page(size: int) -> str:
        hostile = "Post.register({})x" * (size // 18)
        return KONACHAN_PAGE.replace("</script>", hostile + "\n</script>")

    small, large = page(75_000), page(300_000)
    parse_moebooru_listing(small, PAGE_URL)  # warm up
    ratio = _best_cpu_time(lambda: parse_moebooru_listing(large, PAGE_URL)) / \
        _best_cpu_time(lambda: parse_moebooru_listing(small, PAGE_URL))
    assert ratio < 8.0, ratio  # linear: 4; quadratic: 16
    listing = parse_moebooru_listing(large, PAGE_URL)  # and the page still reads right
    assert [post.id for post in listing.posts] == [334664, 334663]
    assert listing.posts[0].tags == ("barefoot", "candy", "dress")


def test_register_calls_decodes_each_call_and_skips_what_is_not_json():
    script = ('Post.register({"id": 1});\nPost.register( {"id": 2, "x": ")"} ) ;'
              'Post.register({"id": 3, "deep": ' + "[" * 100_000 + ');'
              'Post.register({"id": 4, "big": ' + "9" * 5000 + '});'
              'Post.register(nonsense); Post.register({"id": 5, "tags": "a b"})')
    assert list(register_calls(script)) == [{"id": 1}, {"id": 2, "x": ")"},
                                            {"id": 5, "tags": "a b"}]
    assert list(register_calls("no calls here")) == []


class CountingDecoder(json.JSONDecoder):
    """The real decoder, counting the characters it is handed from where it starts decoding: its
    scan and the line count in its error messages both stay within them. Past the budget it stops
    the test at once instead of letting a quadratic parse run for an hour."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget
        self.handed = 0

    def raw_decode(self, s: str, idx: int = 0):
        self.handed += len(s) - idx
        if self.handed > self.budget:
            raise AssertionError(f"decoder handed {self.handed} characters, over {self.budget}")
        return super().raw_decode(s, idx)


# Post.register lines that fail to decode, each in its own way
HOSTILE_REGISTER_LINES = (
    "Post.register(x" * 40,  # calls that are not JSON, one after another
    'Post.register({"id": 1, "tags": "' + "a " * 200,  # a string cut off by the line's end
    'Post.register(["Post.register([", ' * 20,  # calls inside the strings of others
    "Post.register(" + "[" * 2000,  # nested too deep
    "Post.register([" + "1" * 5000 + "]",  # a number longer than ints may be
    'Post.register({"id": 2, "tags": "\\u00',  # an escape cut short
    'Post.register({"id": 3, "tags": "a"',  # an object never closed
)


def test_post_register_parsing_at_the_page_limit_does_linear_work(monkeypatch):
    """20 MiB of calls that fail to decode: a decoding error counted the lines of everything the
    decoder was handed, and it was handed the rest of the page at each call, an hour at this size.
    Each character may be handed over a bounded number of times."""
    line = "\n".join(HOSTILE_REGISTER_LINES) + "\n"
    script = line * (LISTING_MAX_BYTES // len(line) + 1)
    decoder = CountingDecoder(budget=8 * len(script))
    monkeypatch.setattr(boorus, "_JSON", decoder)
    assert list(register_calls(script + 'Post.register({"id": 4})')) == [{"id": 4}]
    assert decoder.handed > len(script) // 2  # every call was decoded


# values whose end a decoder handed too little of could misread: numbers, literals and escapes
TRICKY_VALUES = [True, False, None, float("-inf"), -1.5e-7, 123456789 * 10**90, "\U0001f600 \\ \" x",
                 {"nested": [[[{"a": []}]]]}, "long " * 5000]


@pytest.mark.parametrize("shift", range(0, 80, 3))
def test_register_calls_decode_long_values_whole(shift):
    """A call inside a string is part of the value; a value may run far past the next call."""
    value = ["." * shift + "Post.register(", *TRICKY_VALUES]
    encoded = json.dumps(value)
    for script in (f"Post.register({encoded});", f"Post.register({encoded})",
                   f"Post.register({encoded}); Post.register(x" + " " * 10_000):
        assert list(register_calls(script)) == [value]
    assert value not in list(register_calls(f"Post.register({encoded[:-1]}"))  # cut short: not taken


@pytest.mark.parametrize(("alt", "tags"), [
    ("Rating: Safe Score: 0 Tags: barefoot candy User: someone", ("barefoot", "candy")),
    ("Rating: Safe Score: 0 Tags:    blue_hair   long_hair    User:   x", ("blue_hair", "long_hair")),
    ("Rating: Safe Score: 0 Tags: User: x", ()),
    ("Rating: Safe Score: 0 Tags: barefoot candy", ()),  # no User: after the tags
    ("User: a Tags: sky User: b", ("sky",)),
    ("Tags: a Tags: b User: c", ("a", "Tags:", "b")),
    ("", ()),
])
def test_alt_text_tags_of_a_post_without_post_register(alt, tags):
    page = KONACHAN_PAGE.replace("Rating: Questionable Score: 3 Tags: blue_hair long_hair User: x", alt)
    assert parse_moebooru_listing(page, PAGE_URL).posts[1].tags == tags


def test_alt_text_tags_are_read_in_linear_time():
    """A run of spaces after "Tags:" with no "User:" made the regular expression backtrack
    cubically (2,000 spaces took 5 s). Four times the spaces must not take much more than four
    times as long."""
    def page(spaces: int) -> str:
        return KONACHAN_PAGE.replace("Tags: blue_hair long_hair User: x", "Tags:" + " " * spaces + "x")

    small, large = page(300), page(1200)
    parse_moebooru_listing(small, PAGE_URL)  # warm up
    ratio = _best_cpu_time(lambda: parse_moebooru_listing(large, PAGE_URL)) / \
        _best_cpu_time(lambda: parse_moebooru_listing(small, PAGE_URL))
    assert ratio < 16.0, ratio  # linear: at most 4; cubic: 64
    assert parse_moebooru_listing(large, PAGE_URL).posts[1].tags == ()


def test_listing_posts_with_malformed_ids_are_skipped_and_named():
    page = KONACHAN_PAGE.replace('id="p334663"', 'id="pabc"').replace(
        '"id":334664,', '"id":"x","other":1,"id2":334664,')
    listing = parse_moebooru_listing(page, PAGE_URL)
    # 334664's Post.register has no usable id: its post is read from the markup alone
    assert [post.id for post in listing.posts] == [334664]
    assert listing.posts[0].tags == ("barefoot", "candy") and listing.posts[0].md5 is None
    assert listing.malformed == ("post id 'abc' is not a number",)
    assert listing.without_file == 1 and listing.lowest_id == 334662


def test_a_listing_of_only_malformed_ids_is_changed_markup():
    page = "<ul id='post-list-posts'><li id='pone'></li><li id='ptwo'></li></ul>"
    with pytest.raises(MarkupError, match=r"li#p<id>"):
        parse_moebooru_listing(page, PAGE_URL)


def test_api_posts_in_malformed_shapes_are_skipped_and_named():
    objects = json.loads(YANDERE_JSON)
    objects += [{**objects[0], "id": "x"}, {**objects[0], "id": True}, {**objects[0], "id": 2.5},
                {**objects[0], "id": 1201, "file_url": 5},
                {**objects[0], "id": 1202, "md5": "not an md5"},
                {**objects[0], "id": "9" * 5000}]
    listing = parse_moebooru_json(json.dumps(objects), "https://yande.re/post.json")
    assert [post.id for post in listing.posts] == [1200, 1198]
    assert listing.without_file == 1 and listing.lowest_id == 1198
    assert listing.malformed[:5] == (
        "post id 'x' is not a number", "post id True is not a number",
        "post id 2.5 is not a number", "post 1201: file_url 5 is not a URL",
        "post 1202: md5 'not an md5' is not an md5")
    assert listing.malformed[5].startswith("post id '9999") and len(listing.malformed[5]) < 80


@pytest.mark.parametrize("body", ["[" * 100_000, "[" + "9" * 5000 + "]"])
def test_json_pages_too_deep_or_too_long_a_number_are_one_line_errors(body):
    with pytest.raises(MarkupError, match="not JSON"):
        parse_danbooru_json(body, "https://safebooru.donmai.us/posts.json?page=1")


def test_listed_md5_is_compared_in_lower_case():
    upper = json.loads(DANBOORU_JSON)
    upper[0]["md5"] = "A" * 32
    post = parse_danbooru_json(json.dumps(upper), "https://safebooru.donmai.us/posts.json").posts[0]
    assert post.md5 == "a" * 32 and post.expected_md5(post.urls["original"]) == "a" * 32
    assert Post(1, {"original": "o"}, md5="ABC").expected_md5("o") == "abc"
