/* The Practice page: a recall drill over the book's interview questions.
 *
 * Cards come from practice.json (next to the page, generated from the chapters by
 * tools/build_practice.py). The schedule is FSRS, from the vendored ts-fsrs UMD build
 * (window.FSRS). Progress is kept in localStorage under a versioned key; data that cannot be
 * read (damaged, or written by another version) is reset with a visible message.
 * Both editions (English, and Chinese under zh/, same site) share that progress: a card has the
 * same id in both, and what a reader remembers does not depend on the language they drill in,
 * so switching editions keeps the schedule instead of starting over.
 * Keyboard: space reveals the answer, 1-4 rate it (again, hard, good, easy).
 */
(function () {
  "use strict";

  var STORAGE_KEY = "cnn-course.practice.v1";
  var OLD_KEYS = ["cnn-course.practice", "cnn-course.practice.v0"];
  var TIMER_SECONDS = 45;
  var RATINGS = [
    { key: "1", name: "again" },
    { key: "2", name: "hard" },
    { key: "3", name: "good" },
    { key: "4", name: "easy" },
  ];
  // UI text by edition (<html lang>: "en", "zh-CN"); a string an edition's table lacks shows
  // in English. tests/test_practice_zh.py checks that every table has every English key.
  var STRINGS = {
    en: {
      filters: "Filters and settings",
      chapter: "Chapter",
      allChapters: "All chapters",
      topic: "Topic",
      allTopics: "All topics",
      askedIn: "Asked in",
      anyCollections: "any number of collections",
      orMore: function (n) {
        return n + " or more of 5";
      },
      allFive: "all 5",
      errataOnly: " Only questions whose common answer is wrong (errata)",
      followups: " Include follow-up questions",
      timer: function (s) {
        return " " + s + "-second timer: answer aloud before revealing";
      },
      cards: "cards",
      rate: "Rate",
      again: "Again",
      hard: "Hard",
      good: "Good",
      easy: "Easy",
      spaceKey: "space",
      minutes: "min",
      hours: "h",
      days: "d",
      months: "mo",
      years: "y",
      seconds: "s",
      loading: "Loading the questions\u2026",
      loadFailed:
        "The questions could not be loaded (practice.json). Open this page from the website " +
        "(or a local web server: python -m http.server in the built site), not as a file.",
      noScheduler: "The scheduler (ts-fsrs) did not load; reload the page.",
      reset:
        "Your saved practice progress could not be read (it was damaged or written by an " +
        "older version of this page) and has been reset.",
      noStorage: "This browser does not let the page store data: progress will not be kept.",
      show: "Show answer",
      keywords: "Keywords",
      readSection: "Read the full section",
      followupOf: "Follow-up to",
      errata: "The common answer to this question is wrong",
      asked: function (n) {
        return n === 0 ? "added by the course" : "asked in " + n + " of 5 collections";
      },
      due: "due",
      fresh: "new",
      inFilter: "in this selection",
      reviewed: "reviewed",
      done: "Nothing is due in this selection.",
      nextDue: "Next review",
      ahead: "Review ahead",
      timeUp: "Time is up: reveal the answer and rate yourself.",
    },
    zh: {
      filters: "筛选与设置",
      chapter: "章节",
      allChapters: "全部章节",
      topic: "主题",
      allTopics: "全部主题",
      askedIn: "出现于",
      anyCollections: "任意数量的题库",
      orMore: function (n) {
        return "5 个题库中至少 " + n + " 个";
      },
      allFive: "全部 5 个题库",
      errataOnly: " 只看常见答案有误的问题（勘误）",
      followups: " 包括追问",
      timer: function (s) {
        return " " + s + " 秒计时器：先大声作答，再揭开答案";
      },
      cards: "张卡片",
      rate: "评分",
      again: "重来",
      hard: "困难",
      good: "良好",
      easy: "容易",
      spaceKey: "空格",
      minutes: "分钟",
      hours: "小时",
      days: "天",
      months: "个月",
      years: "年",
      seconds: "秒",
      loading: "正在加载题目\u2026",
      loadFailed:
        "无法加载题目（practice.json）。请通过网站打开本页（或在构建好的网站目录中运行本地 Web " +
        "服务器：python -m http.server），而不是直接打开文件。",
      noScheduler: "调度器（ts-fsrs）未能加载；请重新加载本页。",
      reset: "无法读取已保存的练习进度（数据已损坏，或由本页的旧版本写入），进度已重置。",
      noStorage: "此浏览器不允许本页保存数据：练习进度将不会保留。",
      show: "显示答案",
      keywords: "关键词",
      readSection: "阅读完整章节",
      followupOf: "追问自",
      errata: "这个问题的常见答案是错误的",
      asked: function (n) {
        return n === 0 ? "本课程补充的问题" : "5 个题库中有 " + n + " 个问到";
      },
      due: "到期",
      fresh: "新卡片",
      inFilter: "在当前筛选中",
      reviewed: "已复习",
      done: "当前筛选中没有到期的卡片。",
      nextDue: "下次复习",
      ahead: "提前复习",
      timeUp: "时间到：揭开答案，给自己打分。",
    },
  };
  var lang = (document.documentElement.lang || "en").slice(0, 2).toLowerCase();
  // the edition's strings, English where one is missing
  var T = Object.assign({}, STRINGS.en, STRINGS[lang] || {});

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "html") node.innerHTML = attrs[k];
      else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), attrs[k]);
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) {
      if (c) node.appendChild(c);
    });
    return node;
  }

  // ---- storage ---------------------------------------------------------------------------
  function emptyState() {
    return { version: 1, cards: {}, reviews: 0, settings: { timer: false } };
  }

  function validCard(c) {
    return (
      c &&
      typeof c === "object" &&
      !isNaN(Date.parse(c.due)) &&
      [0, 1, 2, 3].indexOf(c.state) >= 0 &&
      isFinite(c.stability) &&
      isFinite(c.difficulty) &&
      isFinite(c.reps) &&
      isFinite(c.lapses)
    );
  }

  function Store() {
    this.available = true;
    this.message = null;
    var raw = null;
    try {
      raw = window.localStorage.getItem(STORAGE_KEY);
      OLD_KEYS.forEach(function (k) {
        if (window.localStorage.getItem(k) !== null) {
          window.localStorage.removeItem(k);
          this.message = T.reset;
        }
      }, this);
    } catch (e) {
      this.available = false;
      this.message = T.noStorage;
    }
    this.state = emptyState();
    if (raw !== null) {
      try {
        var data = JSON.parse(raw);
        if (!data || data.version !== 1 || typeof data.cards !== "object" || !data.cards) {
          throw new Error("unknown format");
        }
        Object.keys(data.cards).forEach(function (id) {
          if (!validCard(data.cards[id])) throw new Error("bad card " + id);
        });
        this.state = {
          version: 1,
          cards: data.cards,
          reviews: isFinite(data.reviews) ? data.reviews : 0,
          settings: { timer: !!(data.settings && data.settings.timer) },
        };
      } catch (e) {
        this.message = T.reset;
        this.save();
      }
    }
  }

  Store.prototype.save = function () {
    if (!this.available) return;
    try {
      window.localStorage.setItem(STORAGE_KEY, JSON.stringify(this.state));
    } catch (e) {
      this.available = false;
      this.message = T.noStorage;
    }
  };

  Store.prototype.card = function (id) {
    var c = this.state.cards[id];
    if (!c) return null;
    var card = Object.assign({}, c);
    card.due = new Date(c.due);
    card.last_review = c.last_review ? new Date(c.last_review) : undefined;
    return card;
  };

  Store.prototype.put = function (id, card) {
    var c = Object.assign({}, card);
    c.due = card.due.toISOString();
    c.last_review = card.last_review ? new Date(card.last_review).toISOString() : null;
    this.state.cards[id] = c;
    this.state.reviews += 1;
    this.save();
  };

  // ---- the app ---------------------------------------------------------------------------
  function interval(from, to) {
    var minutes = Math.max(1, Math.round((to - from) / 60000));
    if (minutes < 60) return minutes + " " + T.minutes;
    var hours = Math.round(minutes / 60);
    if (hours < 24) return hours + " " + T.hours;
    var days = Math.round(hours / 24);
    if (days < 31) return days + " " + T.days;
    var months = days / 30.4;
    return months < 12
      ? months.toFixed(1) + " " + T.months
      : (days / 365).toFixed(1) + " " + T.years;
  }

  function App(root, cards, store) {
    this.root = root;
    this.base = root.getAttribute("data-root") || "";
    this.cards = cards;
    this.byId = {};
    cards.forEach(function (c) {
      this.byId[c.id] = c;
    }, this);
    this.store = store;
    this.scheduler = window.FSRS.fsrs(window.FSRS.generatorParameters({ enable_fuzz: true }));
    this.filters = { chapter: "", topic: "", frequency: "0", errata: false, followups: true };
    this.seenSections = {};
    this.reviewedIds = {};
    this.current = null;
    this.revealed = false;
    this.timer = null;
    this.ahead = false;
  }

  App.prototype.link = function (url) {
    return /^([a-z]+:|\/|#)/i.test(url) ? url : this.base + url;
  };

  App.prototype.typeset = function (node) {
    var mj = window.MathJax;
    if (!mj || !mj.startup || !mj.startup.promise) return Promise.resolve();
    return mj.startup.promise.then(function () {
      return mj.typesetPromise ? mj.typesetPromise([node]) : null;
    });
  };

  App.prototype.build = function () {
    var self = this;
    this.root.innerHTML = "";
    this.messageBox = el("div", { id: "practice-message", class: "practice-message", role: "status" });
    if (this.store.message) {
      this.messageBox.textContent = this.store.message;
      this.messageBox.classList.add("visible");
    }
    var chapters = {};
    var topics = {};
    this.cards.forEach(function (c) {
      chapters[c.chapter] = c.chapter_number + ". " + c.chapter_title;
      if (c.topic) topics[c.topic] = true;
    });
    function select(id, label, options, value, onchange) {
      var s = el("select", { id: id, onchange: onchange });
      options.forEach(function (o) {
        var opt = el("option", { value: o[0], text: o[1] });
        if (o[0] === value) opt.selected = true;
        s.appendChild(opt);
      });
      return el("label", { class: "practice-filter" }, [el("span", { text: label }), s]);
    }
    var refresh = function () {
      self.ahead = false;
      self.next();
    };
    var filters = el("details", { class: "practice-filters" }, [
      el("summary", { text: T.filters }),
      select(
        "practice-chapter",
        T.chapter,
        [["", T.allChapters]].concat(
          Object.keys(chapters)
            .sort()
            .map(function (k) {
              return [k, chapters[k]];
            })
        ),
        "",
        function (e) {
          self.filters.chapter = e.target.value;
          refresh();
        }
      ),
      select(
        "practice-topic",
        T.topic,
        [["", T.allTopics]].concat(
          Object.keys(topics)
            .sort()
            .map(function (k) {
              return [k, k];
            })
        ),
        "",
        function (e) {
          self.filters.topic = e.target.value;
          refresh();
        }
      ),
      select(
        "practice-frequency",
        T.askedIn,
        [
          ["0", T.anyCollections],
          ["2", T.orMore(2)],
          ["3", T.orMore(3)],
          ["4", T.orMore(4)],
          ["5", T.allFive],
        ],
        "0",
        function (e) {
          self.filters.frequency = e.target.value;
          refresh();
        }
      ),
      el("label", { class: "practice-check" }, [
        el("input", {
          type: "checkbox",
          id: "practice-errata",
          onchange: function (e) {
            self.filters.errata = e.target.checked;
            refresh();
          },
        }),
        el("span", { text: T.errataOnly }),
      ]),
      el("label", { class: "practice-check" }, [
        el("input", {
          type: "checkbox",
          id: "practice-followups",
          checked: "checked",
          onchange: function (e) {
            self.filters.followups = e.target.checked;
            refresh();
          },
        }),
        el("span", { text: T.followups }),
      ]),
      el("label", { class: "practice-check" }, [
        (function () {
          var box = el("input", {
            type: "checkbox",
            id: "practice-timer-toggle",
            onchange: function (e) {
              self.store.state.settings.timer = e.target.checked;
              self.store.save();
              self.startTimer();
            },
          });
          box.checked = self.store.state.settings.timer;
          return box;
        })(),
        el("span", { text: T.timer(TIMER_SECONDS) }),
      ]),
    ]);
    this.stats = el("p", { id: "practice-stats", class: "practice-stats" });
    this.card = el("div", { id: "practice-card", class: "practice-card", tabindex: "-1" });
    this.root.appendChild(this.messageBox);
    this.root.appendChild(filters);
    this.root.appendChild(this.stats);
    this.root.appendChild(this.card);
    document.addEventListener("keydown", function (e) {
      self.key(e);
    });
  };

  App.prototype.inSelection = function (c) {
    var f = this.filters;
    return (
      (!f.chapter || c.chapter === f.chapter) &&
      (!f.topic || c.topic === f.topic) &&
      c.frequency >= Number(f.frequency) &&
      (!f.errata || c.erratum) &&
      (f.followups || c.kind !== "followup")
    );
  };

  App.prototype.sectionKey = function (c) {
    return c.chapter + "#" + c.heading;
  };

  App.prototype.pick = function () {
    var now = new Date();
    var self = this;
    var selection = this.cards.filter(function (c) {
      return self.inSelection(c);
    });
    var due = [];
    var fresh = [];
    var later = [];
    selection.forEach(function (c) {
      var s = self.store.card(c.id);
      if (!s) fresh.push(c);
      else if (s.due <= now) due.push([s.due, c]);
      else later.push([s.due, c]);
    });
    due.sort(function (a, b) {
      return a[0] - b[0];
    });
    later.sort(function (a, b) {
      return a[0] - b[0];
    });
    // another label of a section already drilled in this visit waits (Anki buries siblings)
    var open = function (c) {
      return self.reviewedIds[c.id] || !self.seenSections[self.sectionKey(c)];
    };
    var pool = due
      .map(function (d) {
        return d[1];
      })
      .filter(open)
      .concat(fresh.filter(open));
    if (!pool.length && this.ahead && later.length) pool = [later[0][1]];
    this.counts = { selection: selection.length, due: due.length, fresh: fresh.length };
    this.nextDue = later.length ? later[0][0] : null;
    return pool.length ? pool[0] : null;
  };

  App.prototype.showStats = function () {
    var total = el("span", { id: "practice-total", text: String(this.cards.length) });
    this.stats.innerHTML = "";
    this.stats.appendChild(
      document.createTextNode(
        this.counts.due +
          " " +
          T.due +
          " \u00b7 " +
          this.counts.fresh +
          " " +
          T.fresh +
          " \u00b7 " +
          this.counts.selection +
          " " +
          T.inFilter +
          " \u00b7 "
      )
    );
    this.stats.appendChild(total);
    this.stats.appendChild(document.createTextNode(" " + T.cards + " \u00b7 "));
    this.stats.appendChild(
      el("span", { id: "practice-reviewed", text: String(this.store.state.reviews) })
    );
    this.stats.appendChild(document.createTextNode(" " + T.reviewed));
  };

  App.prototype.stopTimer = function () {
    if (this.timer) window.clearInterval(this.timer);
    this.timer = null;
    if (this.timerBox) this.timerBox.textContent = "";
  };

  App.prototype.startTimer = function () {
    var self = this;
    this.stopTimer();
    if (!this.store.state.settings.timer || !this.current || this.revealed) return;
    var end = Date.now() + TIMER_SECONDS * 1000;
    var tick = function () {
      var left = Math.max(0, Math.ceil((end - Date.now()) / 1000));
      self.timerBox.textContent = left > 0 ? left + " " + T.seconds : T.timeUp;
      self.timerBox.classList.toggle("expired", left === 0);
      if (left === 0) {
        window.clearInterval(self.timer);
        self.timer = null;
      }
    };
    tick();
    this.timer = window.setInterval(tick, 250);
  };

  App.prototype.next = function () {
    this.current = this.pick();
    this.revealed = false;
    this.showStats();
    this.card.innerHTML = "";
    this.stopTimer();
    var self = this;
    if (!this.current) {
      this.card.removeAttribute("data-card-id");
      this.card.appendChild(el("p", { class: "practice-done", text: T.done }));
      if (this.nextDue) {
        this.card.appendChild(
          el("p", { text: T.nextDue + ": " + this.nextDue.toLocaleString() })
        );
        this.card.appendChild(
          el("button", {
            type: "button",
            class: "practice-button",
            text: T.ahead,
            onclick: function () {
              self.ahead = true;
              self.next();
            },
          })
        );
      }
      return;
    }
    var c = this.current;
    this.card.setAttribute("data-card-id", c.id);
    var meta = [c.chapter_number + ". " + c.chapter_title, c.topic, T.asked(c.frequency)];
    this.card.appendChild(el("p", { class: "practice-meta", text: meta.join(" \u00b7 ") }));
    if (c.erratum) {
      this.card.appendChild(el("p", { class: "practice-erratum", text: T.errata }));
    }
    var question = el("div", { class: "practice-question" });
    if (c.kind === "followup" && this.byId[c.parent]) {
      question.appendChild(
        el("p", {
          class: "practice-parent",
          text: T.followupOf + ": " + (lang === "zh" && this.byId[c.parent].question_zh
            ? this.byId[c.parent].question_zh
            : this.byId[c.parent].question_en),
        })
      );
    }
    if (c.question_zh) {
      question.appendChild(el("p", { class: "practice-zh", lang: "zh-CN", text: c.question_zh }));
    }
    question.appendChild(el("p", { class: "practice-en", lang: "en", text: c.question_en }));
    if (c.heading && c.heading !== c.question_en && c.kind !== "followup") {
      question.appendChild(el("p", { class: "practice-heading", text: "\u2192 " + c.heading }));
    }
    this.card.appendChild(question);
    this.timerBox = el("p", { class: "practice-timer", id: "practice-timer", "aria-live": "polite" });
    this.card.appendChild(this.timerBox);
    this.revealButton = el("button", {
      type: "button",
      id: "practice-reveal",
      class: "practice-button practice-reveal",
      onclick: function () {
        self.reveal();
      },
    }, [el("span", { text: T.show + " " }), el("kbd", { text: T.spaceKey })]);
    this.card.appendChild(this.revealButton);
    this.typeset(question);
    this.startTimer();
  };

  App.prototype.reveal = function () {
    if (!this.current || this.revealed) return;
    this.revealed = true;
    this.stopTimer();
    var self = this;
    var c = this.current;
    this.revealButton.remove();
    var answer = el("div", { class: "practice-answer", id: "practice-answer", html: c.answer_html });
    Array.prototype.forEach.call(answer.querySelectorAll("a[href]"), function (a) {
      a.setAttribute("href", self.link(a.getAttribute("href")));
    });
    this.card.appendChild(answer);
    if (c.keywords_html && c.keywords_html.length) {
      var list = el("ul", { class: "practice-keywords" });
      c.keywords_html.forEach(function (k) {
        list.appendChild(el("li", { html: k }));
      });
      this.card.appendChild(
        el("div", { class: "practice-keywords-box" }, [
          el("span", { class: "practice-label", text: T.keywords + ":" }),
          list,
        ])
      );
    }
    this.card.appendChild(
      el("p", { class: "practice-link" }, [
        el("a", { href: this.link(c.url), text: T.readSection + " \u2192 " + c.heading }),
      ])
    );
    var now = new Date();
    var stored = this.store.card(c.id) || window.FSRS.createEmptyCard(now);
    var preview = this.scheduler.repeat(stored, now);
    var buttons = el("div", { class: "practice-ratings", role: "group", "aria-label": T.rate });
    RATINGS.forEach(function (r, i) {
      var due = preview[i + 1].card.due;
      buttons.appendChild(
        el("button", {
          type: "button",
          class: "practice-button practice-rate practice-" + r.name,
          "data-rating": r.key,
          onclick: function () {
            self.rate(i + 1);
          },
        }, [
          el("kbd", { text: r.key }),
          el("span", { text: " " + T[r.name] + " " }),
          el("small", { text: interval(now, due) }),
        ])
      );
    });
    this.card.appendChild(buttons);
    this.card.focus({ preventScroll: true });
    this.typeset(this.card);
  };

  App.prototype.rate = function (grade) {
    if (!this.current || !this.revealed) return;
    var c = this.current;
    var now = new Date();
    var stored = this.store.card(c.id) || window.FSRS.createEmptyCard(now);
    var result = this.scheduler.next(stored, now, grade);
    this.store.put(c.id, result.card);
    if (!this.store.available) this.showMessage(this.store.message);
    this.reviewedIds[c.id] = true;
    this.seenSections[this.sectionKey(c)] = true;
    this.ahead = false;
    this.next();
  };

  App.prototype.showMessage = function (text) {
    this.messageBox.textContent = text;
    this.messageBox.classList.add("visible");
  };

  App.prototype.key = function (e) {
    var tag = (e.target && e.target.tagName) || "";
    if (/^(INPUT|SELECT|TEXTAREA)$/.test(tag) || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key === " " || e.code === "Space") {
      if (this.current && !this.revealed) {
        e.preventDefault();
        this.reveal();
      }
    } else if (/^[1-4]$/.test(e.key) && this.revealed) {
      e.preventDefault();
      this.rate(Number(e.key));
    }
  };

  function fail(root, text) {
    root.innerHTML = "";
    root.appendChild(el("p", { class: "practice-message visible", id: "practice-message", text: text }));
  }

  function start() {
    var root = document.getElementById("practice-app");
    if (!root) return;
    root.textContent = T.loading;
    if (!window.FSRS || !window.FSRS.fsrs) {
      fail(root, T.noScheduler);
      return;
    }
    var store = new Store();
    fetch(root.getAttribute("data-cards") || "practice.json")
      .then(function (r) {
        if (!r.ok) throw new Error(r.status);
        return r.json();
      })
      .then(function (cards) {
        if (!Array.isArray(cards) || !cards.length) throw new Error("no cards");
        var app = new App(root, cards, store);
        window.practiceApp = app;
        app.build();
        app.next();
        root.setAttribute("data-ready", "true");
      })
      .catch(function () {
        fail(root, T.loadFailed);
      });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
