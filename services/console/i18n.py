"""The console's words in zh-CN (default) and English: one catalogue, no build step.

A missing key shows itself (``[[key]]``) instead of failing the page, and the unit test
checks that every key used by a template exists in both languages."""

from __future__ import annotations

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"

MESSAGES: dict[str, tuple[str, str]] = {
    # frame
    "app.title": ("联审联批工作台", "claimflow console"),
    "nav.window": ("窗口受理", "Window"),
    "nav.new_claim": ("新建申请", "New claim"),
    "nav.search": ("查询", "Search"),
    "nav.review": ("联审", "Joint review"),
    "nav.sign_off": ("联批", "Sign-off"),
    "nav.status": ("进度查询", "Claim status"),
    "nav.grafana": ("资金看板 (Grafana)", "Dashboards (Grafana)"),
    "nav.logout": ("退出", "Sign out"),
    "nav.login": ("登录", "Sign in"),
    "user.role": ("角色", "Role"),
    "user.department": ("部门", "Department"),
    "lang.switch": ("English", "中文"),
    # roles, departments
    "role.window_clerk": ("窗口受理员", "window clerk"),
    "role.reviewer": ("部门审核员", "department reviewer"),
    "role.approver": ("审批领导", "approver"),
    "role.finance_clerk": ("财务人员", "finance clerk"),
    "role.finance_supervisor": ("财务主管", "finance supervisor"),
    "role.auditor": ("审计", "auditor"),
    "role.admin": ("运维", "admin"),
    "dept.tax": ("税务局", "tax bureau"),
    "dept.finance": ("财政局", "finance bureau"),
    "dept.industry": ("主管部门", "industry department"),
    "dept.treasury": ("国库", "treasury"),
    "dept.sign_off": ("领导签批", "sign-off"),
    # who holds a claim (intake's holders), events on the timeline
    "holder.review": ("联审部门", "review"),
    "holder.enterprise": ("企业 (待补材料)", "the enterprise (documents)"),
    "holder.payout": ("资金拨付", "payout"),
    "holder.finance (budget)": ("财政 (待资金额度)", "finance (budget)"),
    "holder.treasury/bank": ("国库/银行", "treasury / bank"),
    "holder.finance (account correction)": ("财政 (更正账户)", "finance (account correction)"),
    "holder.none (final)": ("已办结", "none (final)"),
    "event.claim.submitted": ("窗口受理", "registered at the window"),
    "event.claim.document_supplied": ("补交材料", "document supplied"),
    "event.claim.documents_completed": ("材料补齐", "documents complete"),
    "event.claim.withdrawn": ("撤回", "withdrawn"),
    "event.claim.lapsed": ("逾期失效", "lapsed"),
    "event.review.cross_checked": ("自动比对 (联核)", "cross-checked"),
    "event.review.stage_changed": ("环节变更", "stage changed"),
    "event.review.task_decided": ("部门审核意见", "department decision"),
    "event.review.returned_for_documents": ("退回补正", "returned for documents"),
    "event.review.deadline_warning": ("期限预警", "deadline warning"),
    "event.review.escalated": ("超期督办", "escalated"),
    "event.review.signed_off": ("领导签批", "signed off"),
    "event.review.decided": ("审批结论", "review decided"),
    "event.payout.queued": ("等待资金额度", "waiting for budget"),
    "event.payout.requested": ("发起拨付", "payout requested"),
    "event.payout.sent": ("已发送银行", "sent to the bank"),
    "event.payout.confirmed": ("资金到账", "money arrived"),
    "event.payout.returned": ("银行退回", "returned by the bank"),
    "event.payout.failed": ("拨付失败", "payout failed"),
    # claim statuses
    "status.submitted": ("已受理", "submitted"),
    "status.accepted_documents_pending": ("容缺受理", "accepted, documents promised"),
    "status.in_review": ("联审中", "in review"),
    "status.returned_for_documents": ("退回补正", "returned for documents"),
    "status.approved": ("已核准", "approved"),
    "status.approved_documents_pending": ("核准待补件", "approved, documents pending"),
    "status.rejected": ("不予核准", "rejected"),
    "status.payout_queued": ("待资金额度", "waiting for budget"),
    "status.payout_requested": ("拨付中", "payout requested"),
    "status.payout_sent": ("已发送银行", "sent to the bank"),
    "status.payout_returned": ("银行退回", "returned by the bank"),
    "status.payout_failed": ("拨付失败", "payout failed"),
    "status.paid": ("已到账", "paid"),
    "status.withdrawn": ("已撤回", "withdrawn"),
    "status.lapsed": ("逾期失效", "lapsed"),
    "kind.vat_refund": ("增值税留抵退税", "VAT credit refund"),
    "kind.subsidy": ("奖补资金", "subsidy"),
    # new claim
    "claim.new": ("新建申请", "New claim"),
    "claim.kind": ("申请类型", "Kind"),
    "claim.program": ("奖补项目", "Program"),
    "claim.uscc": ("统一社会信用代码", "Unified social credit code"),
    "claim.enterprise_name": ("企业名称", "Enterprise name"),
    "claim.requested_amount": ("申请金额 (元)", "Requested amount (yuan)"),
    "claim.tax_period": ("所属期 (YYYY-MM)", "Tax period (YYYY-MM)"),
    "claim.end_credit_balance": ("期末留抵税额 (元)", "End credit balance (yuan)"),
    "claim.base_credit_balance": ("基期留抵税额 (元)", "Base credit balance (yuan)"),
    "claim.input_composition_ratio": ("进项构成比例", "Input composition ratio"),
    "claim.tax_credit_rating": ("纳税信用等级", "Tax credit rating"),
    "claim.description": ("说明", "Description"),
    "claim.bank": ("收款账户", "Bank account"),
    "claim.bank_name": ("开户银行", "Bank"),
    "claim.account_name": ("账户名称", "Account name"),
    "claim.account_number": ("银行账号", "Account number"),
    "claim.checklist": ("材料清单", "Document checklist"),
    "claim.doc_critical": ("必要材料 (不可容缺)", "critical (cannot be promised)"),
    "claim.doc_optional": ("可容缺", "may be promised (容缺)"),
    "claim.doc_supplied": ("已提交", "supplied"),
    "claim.doc_promised": ("承诺后补", "promised"),
    "claim.doc_missing": ("未提交", "not supplied"),
    "claim.submit": ("受理", "Register"),
    "claim.fix_errors": ("请更正标出的字段", "Please correct the marked fields"),
    "claim.uscc_ok": ("代码有效", "valid code"),
    # receipt
    "receipt.title": ("受理回执", "Acceptance receipt"),
    "receipt.number": ("申请编号", "Claim number"),
    "receipt.received_at": ("受理时间", "Received at"),
    "receipt.promised": ("承诺后补材料", "Documents promised"),
    "receipt.due": ("补正期限", "Due by"),
    "receipt.none_promised": ("材料齐全", "All documents supplied"),
    "receipt.follow": (
        "进度查询: 凭申请编号和统一社会信用代码在以下网址查询",
        "Follow the claim with the claim number and the credit code at",
    ),
    "receipt.print": ("打印回执", "Print receipt"),
    "receipt.clerk": ("受理人", "Registered by"),
    # search, tracker
    "search.title": ("申请查询", "Search claims"),
    "search.query": ("信用代码 / 企业名称 / 申请编号", "Credit code / name / claim number"),
    "search.status": ("状态", "Status"),
    "search.any": ("全部", "any"),
    "search.go": ("查询", "Search"),
    "search.none": ("没有符合条件的申请", "No claims found"),
    "search.name_note": (
        "按企业名称在最近 500 件申请中查找",
        "Name search looks at the latest 500 claims",
    ),
    "tracker.title": ("申请进度", "Claim tracker"),
    "tracker.holders": ("当前办理", "Held by"),
    "tracker.step_due": ("本环节期限", "Step due"),
    "tracker.time_left": ("剩余时间", "Time left"),
    "tracker.overdue": ("已超期", "overdue"),
    "tracker.hours": ("小时", "h"),
    "tracker.documents": ("材料", "Documents"),
    "tracker.outstanding": ("待补材料", "Documents outstanding"),
    "tracker.received": ("已收到", "Received"),
    "tracker.timeline": ("办理记录", "Timeline"),
    "tracker.withdraw": ("撤回申请", "Withdraw"),
    "tracker.withdraw_reason": ("撤回原因 (企业申请)", "Reason (the enterprise's request)"),
    "tracker.review": ("各部门审核", "Department review"),
    "tracker.amounts": ("金额", "Amounts"),
    "tracker.eligible": ("可退/可奖金额", "Eligible amount"),
    "tracker.receipt": ("受理回执", "Receipt"),
    # review
    "review.worklist": ("待审任务", "Worklist"),
    "review.none": ("没有待审任务", "No tasks waiting"),
    "review.due": ("期限", "Due"),
    "review.overdue": ("超期", "overdue"),
    "review.due_soon": ("即将到期", "due soon"),
    "review.escalated": ("已督办", "escalated"),
    "review.check": ("比对结果", "Cross-check"),
    "review.check.pass": ("通过", "pass"),
    "review.check.warn": ("提示", "warn"),
    "review.check.fail": ("不通过", "fail"),
    "review.recommended": ("建议金额", "Recommended"),
    "review.open": ("办理", "Open"),
    "review.filter": ("筛选", "Filter"),
    "review.only_overdue": ("只看超期", "overdue only"),
    "review.low_risk": ("低风险", "low risk"),
    "review.bulk_approve": ("批量通过所选低风险任务", "Approve the selected low-risk tasks"),
    "review.bulk_done": ("已批量通过", "Approved"),
    "review.task": ("审核任务", "Review task"),
    "review.facts": ("申请信息", "Claim facts"),
    "review.findings": ("比对明细", "Cross-check findings"),
    "review.others": ("各部门进度", "Departments' progress"),
    "review.comment": ("意见", "Opinion / reason"),
    "review.approve": ("通过", "Approve"),
    "review.reject": ("不予通过", "Reject"),
    "review.return": ("退回补正", "Return for documents"),
    "review.return_docs": ("需补正的材料", "Documents to supply"),
    "review.decided": ("已办理", "Decision recorded"),
    "review.task_status": ("状态", "Status"),
    "review.decided_by": ("办理人", "Decided by"),
    "task.pending": ("待办", "pending"),
    "task.approved": ("通过", "approved"),
    "task.rejected": ("不通过", "rejected"),
    "task.returned": ("退回补正", "returned"),
    "task.cancelled": ("已取消", "cancelled"),
    "task.superseded": ("已替代", "superseded"),
    # sign-off
    "signoff.title": ("待签批", "Waiting for sign-off"),
    "signoff.opinions": ("各部门意见", "Departments' opinions"),
    "signoff.approve": ("签批同意", "Sign off"),
    "signoff.reject": ("不同意", "Reject"),
    # public status
    "public.title": ("申请进度查询", "Claim status"),
    "public.intro": (
        "请输入受理回执上的申请编号和企业统一社会信用代码",
        "Enter the claim number from the receipt and the enterprise's credit code",
    ),
    "public.lookup": ("查询", "Look up"),
    "public.not_found": (
        "没有找到该申请 (请核对申请编号与信用代码)",
        "No such claim for this credit code",
    ),
    "public.step": ("当前环节", "Current step"),
    "public.to_supply": ("尚需补交", "Still to supply"),
    "public.by": ("截止", "by"),
    "public.money": ("资金到账", "Money arrived"),
    "public.yes": ("已到账", "yes"),
    "public.no": ("尚未到账", "not yet"),
    "public.rate_limited": ("查询过于频繁, 请稍后再试", "Too many lookups: try again in a minute"),
    # the APIs' validation rules, in Chinese (English: the API's own message)
    "rule.uscc_check_character": (
        "校验码不符 (GB 32100-2015), 请核对是否输入有误",
        "check character",
    ),
    "rule.uscc_format": ("不是有效的统一社会信用代码 (18 位)", "USCC format"),
    "rule.fen_precision": ("金额最多保留两位小数 (分)", "at most 2 decimal places"),
    "rule.string_pattern_mismatch": ("格式不正确", "format"),
    "rule.missing": ("必填", "required"),
    "rule.string_too_short": ("必填", "required"),
    "rule.tax_period_format": ("所属期格式为 YYYY-MM", "YYYY-MM"),
    "rule.tax_period_not_future": ("所属期不能晚于当月", "not in the future"),
    "rule.greater_than": ("必须大于 0", "greater than 0"),
    "rule.decimal_parsing": ("请输入数字金额", "a decimal amount"),
    # errors, misc
    "error.title": ("出错了", "Something went wrong"),
    "error.403": (
        "无权访问: 该任务不属于您的部门或角色",
        "Forbidden: this is not your department's or role's task",
    ),
    "error.404": ("未找到", "Not found"),
    "error.csrf": (
        "表单已过期, 请返回刷新后重试",
        "The form expired: go back, reload and try again",
    ),
    "error.unavailable": (
        "服务暂时不可用, 请稍后再试",
        "A service is not available; try again shortly",
    ),
    "error.signin": ("登录失败", "Sign-in failed"),
    "error.back": ("返回首页", "Back to the start"),
    "home.title": ("欢迎", "Welcome"),
    "home.no_screens": (
        "您的角色暂无工作台页面 (财务、审计页面即将上线)",
        "No screens for your role yet (finance and audit come next)",
    ),
    "login.title": ("请登录", "Please sign in"),
    "login.go": ("通过统一身份认证登录", "Sign in with the identity provider"),
    "logged_out": ("您已退出", "You are signed out"),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
    "amount.requested": ("申请金额", "Requested"),
    "amount.eligible": ("可核准金额", "Eligible"),
    "amount.approved": ("核准金额", "Approved"),
}


def translate_or(key: str, fallback: str, lang: str) -> str:
    """For values from the APIs (holders, event types): the raw value when the catalogue
    has no words for it yet, rather than a ``[[key]]`` marker."""
    return translate(key, lang) if key in MESSAGES else fallback


def translate(key: str, lang: str) -> str:
    pair = MESSAGES.get(key)
    if pair is None:
        return f"[[{key}]]"
    return pair[1] if lang == "en" else pair[0]


def bilingual_name(name: str, lang: str) -> str:
    """Reference names are written ``中文 (English)``: show the part of the language."""
    if " (" in name and name.endswith(")"):
        zh, en = name[:-1].split(" (", 1)
        return en if lang == "en" else zh
    return name
