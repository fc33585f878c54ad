"""`.strongroomignore` rules follow .gitignore: comments, negation, folder-only, anchoring, `**`."""

from __future__ import annotations

import pytest

from strongroom.core.ignore import IgnoreRules


def ignored(patterns: list[str], path: str, is_dir: bool = False) -> bool:
    return IgnoreRules(patterns).ignored(path, is_dir)


def test_no_rules_ignore_nothing() -> None:
    rules = IgnoreRules(["", "   ", "# only a comment"])
    assert not rules
    assert not rules.ignored("anything", False)


@pytest.mark.parametrize("path,expected", [
    ("a.log", True), ("deep/down/a.log", True), ("a.log.txt", False), ("alog", False), ("a.LOG", False),
])
def test_unanchored_glob_matches_at_any_depth(path: str, expected: bool) -> None:
    assert ignored(["*.log"], path) is expected


def test_comment_lines_and_trailing_spaces() -> None:
    assert not ignored(["#a.txt"], "#a.txt")
    assert not ignored(["# a.txt"], "a.txt")
    assert ignored(["a.txt   "], "a.txt")


@pytest.mark.parametrize("path,expected", [
    ("keep.log", False), ("x.log", True), ("sub/keep.log", False), ("sub/x.log", True),
])
def test_negation_re_includes(path: str, expected: bool) -> None:
    assert ignored(["*.log", "!keep.log"], path) is expected


def test_last_matching_rule_wins() -> None:
    assert ignored(["!keep.log", "*.log"], "keep.log")
    assert not ignored(["*.log", "!keep.log"], "keep.log")
    assert ignored(["*.log", "!keep.log", "keep.log"], "keep.log")


def test_trailing_slash_matches_folders_only() -> None:
    rules = ["build/"]
    assert ignored(rules, "build", is_dir=True)
    assert ignored(rules, "src/build", is_dir=True)
    assert not ignored(rules, "build", is_dir=False)
    assert not ignored(rules, "src/build", is_dir=False)
    # and everything below such a folder
    assert ignored(rules, "build/out.o")
    assert ignored(rules, "src/build/deep/out.o")


def test_pattern_without_slash_matches_files_and_folders() -> None:
    assert ignored(["cache"], "cache", is_dir=True)
    assert ignored(["cache"], "cache", is_dir=False)
    assert ignored(["cache"], "cache/x")
    assert ignored(["cache"], "a/cache/x")
    assert not ignored(["cache"], "cachex")
    assert not ignored(["cache"], "xcache")


@pytest.mark.parametrize("pattern", ["/data", "/data/"])
def test_leading_slash_anchors_to_the_root(pattern: str) -> None:
    assert ignored([pattern], "data", is_dir=True)
    assert ignored([pattern], "data/x.bin")
    assert not ignored([pattern], "sub/data", is_dir=True)
    assert not ignored([pattern], "sub/data/x.bin")


def test_inner_slash_anchors_to_the_root() -> None:
    rules = ["doc/*.txt"]
    assert ignored(rules, "doc/a.txt")
    assert not ignored(rules, "x/doc/a.txt")
    assert not ignored(rules, "doc/sub/a.txt")  # `*` never crosses a slash


def test_double_star_prefix_matches_at_any_depth() -> None:
    rules = ["**/logs"]
    assert ignored(rules, "logs", is_dir=True)
    assert ignored(rules, "a/logs", is_dir=True)
    assert ignored(rules, "a/b/c/logs/x")
    assert not ignored(rules, "a/blogs", is_dir=True)


def test_double_star_in_the_middle_spans_zero_or_more_folders() -> None:
    rules = ["a/**/b"]
    for p in ["a/b", "a/x/b", "a/x/y/z/b"]:
        assert ignored(rules, p), p
    assert not ignored(rules, "a/xb")
    assert not ignored(rules, "z/a/b")


def test_trailing_double_star_matches_everything_inside() -> None:
    rules = ["out/**"]
    assert ignored(rules, "out/a")
    assert ignored(rules, "out/a/b/c")
    assert not ignored(rules, "outx/a")


def test_question_mark_and_character_classes() -> None:
    assert ignored(["file?.bin"], "file1.bin")
    assert not ignored(["file?.bin"], "file12.bin")
    assert not ignored(["a?b"], "a/b")
    assert ignored(["img[0-9].png"], "img7.png")
    assert not ignored(["img[0-9].png"], "imgx.png")
    assert ignored(["img[!0-9].png"], "imgx.png")
    assert not ignored(["img[!0-9].png"], "img7.png")


def test_regex_metacharacters_in_names_are_literal() -> None:
    assert ignored(["a+b(1).txt"], "a+b(1).txt")
    assert not ignored(["a.b"], "axb")
    assert ignored(["[unclosed"], "[unclosed")


def test_negated_folder_contents_stay_out_when_the_folder_is_excluded() -> None:
    # git: a file cannot be re-included when a parent folder is excluded. The scanner never enters an
    # ignored folder, so it is enough that the folder itself is ignored.
    rules = IgnoreRules(["logs/", "!logs/keep.txt"])
    assert rules.ignored("logs", True)


def test_dir_only_negation() -> None:
    rules = ["tmp*", "!tmpkeep/"]
    assert not ignored(rules, "tmpkeep", is_dir=True)
    assert ignored(rules, "tmpkeep", is_dir=False)


def test_backslash_escapes_a_leading_hash_or_bang_and_glob_characters() -> None:
    assert ignored([r"\#notes"], "#notes")
    assert ignored([r"\!important"], "!important")
    assert not ignored([r"\!important"], "important")
    assert ignored([r"star\*"], "star*")
    assert not ignored([r"star\*"], "starx")
