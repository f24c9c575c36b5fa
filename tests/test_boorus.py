import pytest

from pipeline.boorus import MarkupError, moebooru_listing_url, parse_moebooru_listing

PAGE_URL = "https://konachan.net/post?page=2&tags=barefoot"

# As konachan.net serves it (../shared/booru-formats.md): one post with its Post.register line,
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
Post.register({"id":334664,"tags":"barefoot candy dress","md5":"66226821ea227bda9a55c2672a62b06e","width":1920,"height":1357,"rating":"s","file_url":"https://konachan.net/image/66226821ea227bda9a55c2672a62b06e/x.png"});
</script>
</body></html>"""


def test_konachan_listing():
    listing = parse_moebooru_listing(KONACHAN_PAGE, PAGE_URL)
    first, second = listing.posts
    assert first.id == 334664
    assert first.tags == ("barefoot", "candy", "dress")  # from Post.register, the reliable source
    assert first.md5 == "66226821ea227bda9a55c2672a62b06e"
    assert first.rating == "s" and (first.width, first.height) == (1920, 1357)
    assert first.file_url.startswith("https://konachan.net/image/66226821")
    # no Post.register line: everything comes from the markup; protocol-relative URL and &amp;
    assert second.id == 334663
    assert second.file_url == "https://konachan.net/jpeg/aabb/Konachan.com%20-%20334663.jpg?a=1&b=2"
    assert second.tags == ("blue_hair", "long_hair")
    assert second.rating == "q" and second.md5 is None
    assert (second.width, second.height) == (1200, 900)
    assert listing.without_file == 1
    assert listing.has_next


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


def test_listing_url_quotes_tags():
    url = moebooru_listing_url("https://konachan.net/", 3, "blue_hair rating:s")
    assert url == "https://konachan.net/post?page=3&tags=blue_hair+rating%3As"
